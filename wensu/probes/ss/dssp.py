"""DSSP secondary structure for user structures: run ``mkdssp`` (Debian package ``dssp``) on a
PDB/mmCIF file, or read a classic DSSP file, and place the labels on the chain's sequence.

mkdssp reads model 1 of a multi-model file. Residues are matched by author chain, number and
insertion code; residues DSSP does not list (no backbone, unobserved) are not scored.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wensu.probes.common.errors import ProbeDataError, StructureError
from wensu.probes.common.inputs import file_stem
from wensu.probes.common.structures import MIN_CHAIN_RESIDUES, place_chain
from wensu.probes.ss.data import SS8_TO_SS3, SSRecord

# DSSP letter -> 8-state class as the built-in sets reduce it (P polyproline and loop -> C).
DSSP_TO_Q8 = {
    "H": "H",
    "G": "G",
    "I": "I",
    "E": "E",
    "B": "B",
    "T": "T",
    "S": "S",
    "P": "C",
    " ": "C",
    "-": "C",
    "C": "C",
}
TABLE_HEADER = "  #  RESIDUE"
DSSP_TIMEOUT_S = 600


@dataclass(frozen=True)
class DsspResidue:
    chain: str
    number: int
    icode: str
    aa: str  # one letter; DSSP writes bonded cysteines in lower case
    state: str  # 8-state class (see DSSP_TO_Q8)


def parse_dssp(text: str, where: str) -> list[DsspResidue]:
    """Residues of a classic-format DSSP file (chain breaks ``!`` left out)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(TABLE_HEADER)), None)
    if start is None:
        raise ProbeDataError(f"{where}: not a DSSP file (no '{TABLE_HEADER.strip()}' table)")
    residues = []
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if len(line) < 17:
            raise ProbeDataError(f"{where} line {number}: truncated DSSP record {line!r}")
        if line[13] == "!":
            continue
        state = line[16]
        if state not in DSSP_TO_Q8:
            raise ProbeDataError(f"{where} line {number}: unknown DSSP state {state!r}")
        try:
            resnum = int(line[5:10])
        except ValueError:
            raise ProbeDataError(f"{where} line {number}: residue number {line[5:10]!r}") from None
        residues.append(
            DsspResidue(line[11], resnum, line[10].strip(), line[13], DSSP_TO_Q8[state])
        )
    return residues


def mkdssp() -> str:
    """Path of the mkdssp executable; a clear error when it is missing."""
    found = shutil.which("mkdssp")
    if found is None:
        raise ProbeDataError(
            "SS labels of PDB/mmCIF files need mkdssp (DSSP 4): apt-get install dssp, or "
            "conda install -c conda-forge dssp; or pass DSSP output (.dssp) or labelled CSV/FASTA"
        )
    return found


def run_mkdssp(path: Path, source: str) -> list[DsspResidue]:
    """DSSP residues of model 1 of a PDB/mmCIF file (``.gz`` decompressed first)."""
    executable = mkdssp()
    with tempfile.TemporaryDirectory(prefix="wensu-dssp-") as tmp:
        structure = Path(path)
        if structure.name.lower().endswith(".gz"):
            structure = Path(tmp) / structure.name[:-3]
            structure.write_bytes(gzip.decompress(Path(path).read_bytes()))
        output = Path(tmp) / "out.dssp"
        try:
            done = subprocess.run(
                [executable, "--output-format", "dssp", str(structure), str(output)],
                capture_output=True,
                text=True,
                timeout=DSSP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise StructureError(
                source, "dssp_failed", f"mkdssp ran over {DSSP_TIMEOUT_S} s"
            ) from None
        if done.returncode != 0 or not output.is_file():
            message = (done.stderr or done.stdout).strip().splitlines()
            detail = message[-1] if message else f"exit status {done.returncode}"
            raise StructureError(source, "dssp_failed", f"mkdssp: {detail}")
        return parse_dssp(output.read_text(encoding="utf-8", errors="replace"), source)


def _states_on(placed, residues: list[DsspResidue]) -> tuple[str, np.ndarray]:
    by_id = {(r.chain, r.number, r.icode): r.state for r in residues}
    ss8 = ["C"] * len(placed.sequence)
    mask = np.zeros(len(placed.sequence), dtype=bool)
    for residue, index in zip(placed.residues, placed.positions, strict=True):
        state = by_id.get((placed.chain_id, residue.id[1], residue.id[2].strip()))
        if index >= 0 and state is not None:
            ss8[index] = state
            mask[index] = True
    return "".join(ss8), mask


def _record(name: str, sequence: str, ss8: str, mask: np.ndarray, source: str) -> SSRecord:
    if not mask.any():
        raise StructureError(source, "no_dssp_labels", "DSSP assigned no residue of the chain")
    ss3 = "".join(SS8_TO_SS3[c] for c in ss8)
    return SSRecord(id=name, sequence=sequence, ss3=ss3, ss8=ss8, mask=mask)


def structure_ss_record(path: Path, chain: str | None = None) -> SSRecord:
    """8/3-state labels of one chain of a PDB/mmCIF file, on its SEQRES (see module docstring)."""
    placed = place_chain(path, chain, fill_gaps=True)
    ss8, mask = _states_on(placed, run_mkdssp(Path(path), placed.source))
    name = f"{file_stem(path)}_{placed.chain_id}"
    return _record(name, placed.sequence, ss8, mask, placed.source)


def dssp_file_record(path: Path, chain: str | None = None) -> SSRecord:
    """One chain of a classic DSSP file: the residues it lists (sequence from its AA column)."""
    path = Path(path)
    source = f"{path}" + (f" chain {chain}" if chain else "")
    text = (
        gzip.decompress(path.read_bytes()).decode()
        if path.name.endswith(".gz")
        else (path.read_text(encoding="utf-8", errors="replace"))
    )
    residues = parse_dssp(text, str(path))
    chains = list(dict.fromkeys(r.chain for r in residues))
    if chain is None:
        counts = {c: sum(r.chain == c for r in residues) for c in chains}
        chain = next((c for c in chains if counts[c] >= MIN_CHAIN_RESIDUES), None)
        if chain is None:
            raise StructureError(
                source, "not_protein", f"no chain with {MIN_CHAIN_RESIDUES}+ residues"
            )
    picked = [r for r in residues if r.chain == chain]
    if not picked:
        raise StructureError(
            source, "chain_missing", f"chain {chain!r} not in [{','.join(chains)}]"
        )
    sequence = "".join("C" if r.aa.islower() else r.aa for r in picked)
    ss8 = "".join(r.state for r in picked)
    return _record(f"{file_stem(path)}_{chain}", sequence, ss8, np.ones(len(picked), bool), source)
