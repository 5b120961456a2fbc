"""Readers for the secondary-structure sets in the data directory's
``structure/secondary_structure`` (``wensu-data fetch ss``).

Every reader returns :class:`SSRecord` objects whose ``mask`` marks the residues to score,
exactly as each source defines it (see that folder's SOURCES.md):

* NetSurfP-2.0 / ProtTrans CSV (CB513, TS115, CASP12): ``disorder == 1.0`` (resolved) and, where
  the column exists, ``cb513_mask == 1.0`` (inside the original CB513 fragment).
* FLIP ``secondary_structure`` zip: ``mask.fasta`` 1 = resolved.
* ICML-2014 CullPDB CSV: every residue (the set carries no mask); ``L`` (coil) is mapped to ``C``.
* DNSS2 CASP11/12 ``.ssa`` tables: every residue (they list observed residues only).
"""

from __future__ import annotations

import csv
import gzip
import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wensu.alphabet import InvalidSequenceError, get_alphabet
from wensu.probes.common.errors import ProbeDataError

SS3_CLASSES = "HEC"
SS8_CLASSES = "HGIEBTSC"
SS8_TO_SS3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}


@dataclass
class SSRecord:
    """One chain: sequence, per-residue 3/8-state labels (either may be None) and score mask."""

    id: str
    sequence: str
    ss3: str | None
    ss8: str | None
    mask: np.ndarray = field(repr=False)

    def labels(self, states: int) -> np.ndarray:
        """Integer labels (index into SS3_CLASSES / SS8_CLASSES); -100 where not scored."""
        text = self.ss3 if states == 3 else self.ss8
        if text is None:
            raise ValueError(f"{self.id}: no {states}-state labels")
        classes = SS3_CLASSES if states == 3 else SS8_CLASSES
        lut = np.full(256, -100, dtype=np.int64)
        for i, c in enumerate(classes):
            lut[ord(c)] = i
        out = lut[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        out[~self.mask] = -100
        return out


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _check_sequence(sequence: str, where: str) -> str:
    try:
        get_alphabet().encode(sequence, add_special=False)
    except InvalidSequenceError as err:
        raise ProbeDataError(f"{where}: {err}") from None
    return sequence.upper()


def _check_labels(text: str, allowed: str, where: str, what: str) -> str:
    bad = sorted(set(text) - set(allowed))
    if bad:
        raise ProbeDataError(f"{where}: {what} has labels {''.join(bad)!r} outside {allowed!r}")
    return text


def _check_lengths(where: str, **columns: int) -> None:
    if len(set(columns.values())) > 1:
        detail = ", ".join(f"{k}={v}" for k, v in columns.items())
        raise ProbeDataError(f"{where}: label/sequence length mismatch ({detail})")


def read_netsurfp_csv(path: Path, name: str | None = None) -> list[SSRecord]:
    """Read a ProtTrans-format NetSurfP-2.0 CSV (``input, dssp3, dssp8, disorder[, cb513_mask]``).

    Record ids are ``<name>_row<N>`` with N the 1-based data row (as in ``overlaps.tsv``).
    """
    path = Path(path)
    name = name or path.name.split("_")[0]
    records: list[SSRecord] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        required = ["input", "dssp3", "dssp8", "disorder"]
        missing = [c for c in required if c not in header]
        if missing:
            raise ProbeDataError(f"{path}: header {header} lacks columns {missing}")
        col = {h: i for i, h in enumerate(header)}
        for row_number, row in enumerate(reader, start=1):
            where = f"{path} data row {row_number}"
            if len(row) != len(header):
                raise ProbeDataError(f"{where}: {len(row)} fields, header has {len(header)}")
            tokens = {h: row[i].split() for h, i in col.items()}
            seq = "".join(tokens["input"])
            ss3 = "".join(tokens["dssp3"])
            ss8 = "".join(tokens["dssp8"])
            lengths = {h: len(tokens[h]) for h in col}
            _check_lengths(where, **lengths)
            if not seq:
                raise ProbeDataError(f"{where}: empty sequence")
            mask = _float_flags(tokens["disorder"], where, "disorder")
            if "cb513_mask" in col:
                mask &= _float_flags(tokens["cb513_mask"], where, "cb513_mask")
            records.append(
                SSRecord(
                    id=f"{name}_row{row_number}",
                    sequence=_check_sequence(seq, where),
                    ss3=_check_labels(ss3, SS3_CLASSES, where, "dssp3"),
                    ss8=_check_labels(ss8, SS8_CLASSES, where, "dssp8"),
                    mask=mask,
                )
            )
    return records


def _float_flags(tokens: list[str], where: str, what: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in tokens])
    except ValueError:
        raise ProbeDataError(f"{where}: {what} holds a non-numeric token") from None
    return values == 1.0


def _read_fasta_text(text: str, where: str) -> Iterator[tuple[str, str]]:
    header: str | None = None
    chunks: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            if header is not None:
                yield header, "".join(chunks)
            header, chunks = line[1:], []
        elif header is None:
            raise ProbeDataError(f"{where} line {line_number}: sequence before the first header")
        else:
            chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


def read_flip_ss(path: Path) -> dict[str, list[SSRecord]]:
    """Read FLIP's ``secondary_structure`` splits zip -> {"train", "valid", "test"} (3-state).

    ``SET=train VALIDATION=True`` chains form "valid"; the mask is ``mask.fasta`` (1 = resolved).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            texts = {}
            for member in ("sequences", "sampled", "mask"):
                texts[member] = archive.read(f"splits/{member}.fasta").decode("ascii")
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ProbeDataError(f"{path}: not a FLIP secondary-structure zip ({err})") from None
    sequences = {h.split()[0]: s for h, s in _read_fasta_text(texts["sequences"], f"{path}:seq")}
    masks = {h.split()[0]: s for h, s in _read_fasta_text(texts["mask"], f"{path}:mask")}
    splits: dict[str, list[SSRecord]] = {"train": [], "valid": [], "test": []}
    for header, labels in _read_fasta_text(texts["sampled"], f"{path}:sampled.fasta"):
        fields = header.split()
        chain = fields[0]
        where = f"{path} splits/sampled.fasta record {chain}"
        tags = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if chain not in sequences or chain not in masks:
            raise ProbeDataError(f"{where}: missing from sequences.fasta or mask.fasta")
        seq, mask_text = sequences[chain], masks[chain]
        _check_lengths(where, sequence=len(seq), labels=len(labels), mask=len(mask_text))
        if tags.get("SET") == "test":
            split = "test"
        elif tags.get("SET") == "train":
            split = "valid" if tags.get("VALIDATION") == "True" else "train"
        else:
            raise ProbeDataError(f"{where}: header lacks SET=train|test")
        mask = np.frombuffer(_check_labels(mask_text, "01", where, "mask").encode(), np.uint8)
        splits[split].append(
            SSRecord(
                id=chain,
                sequence=_check_sequence(seq, where),
                ss3=_check_labels(labels, SS3_CLASSES, where, "labels"),
                ss8=None,
                mask=mask == ord("1"),
            )
        )
    return splits


def read_cullpdb_csv(path: Path) -> list[SSRecord]:
    """Read the ICML-2014 CullPDB / CB513 CSV mirror (``,seq,sst8,sst3,seq_len``).

    ``L`` (coil) in ``sst8`` becomes ``C`` so labels share :data:`SS8_CLASSES`. Ids are
    ``row<index>`` from the unnamed first column (as in ``overlaps.tsv``).
    """
    path = Path(path)
    records: list[SSRecord] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header[1:4] != ["seq", "sst8", "sst3"]:
            raise ProbeDataError(f"{path}: header {header} is not ',seq,sst8,sst3,seq_len'")
        for row_number, row in enumerate(reader, start=1):
            where = f"{path} data row {row_number}"
            if len(row) < 4:
                raise ProbeDataError(f"{where}: {len(row)} fields, expected 5")
            index, seq, sst8, sst3 = row[:4]
            lengths = {"seq": len(seq), "sst8": len(sst8), "sst3": len(sst3)}
            if len(row) > 4 and row[4].strip():
                lengths["seq_len"] = int(row[4])
            _check_lengths(where, **lengths)
            ss8 = _check_labels(sst8.replace("L", "C"), SS8_CLASSES, where, "sst8")
            records.append(
                SSRecord(
                    id=f"row{index}",
                    sequence=_check_sequence(seq, where),
                    ss3=_check_labels(sst3, SS3_CLASSES, where, "sst3"),
                    ss8=ss8,
                    mask=np.ones(len(seq), dtype=bool),
                )
            )
    return records


def _parse_ssa(text: str, where: str) -> tuple[str, str]:
    residues, states = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise ProbeDataError(f"{where} line {line_number}: expected '# AA Struct RSA' columns")
        residues.append(fields[1].strip())
        states.append(fields[2].strip())
    return "".join(residues), "".join(states)


def read_dnss2(folder: Path) -> list[SSRecord]:
    """Read a DNSS2 blind-test folder (``CASP11/`` or ``CASP12/``): targets of ``<set>.list``.

    Residues are the observed residues of the experimental structure, as the ``.ssa`` files give
    them; 3- and 8-state tables must list the same residues.
    """
    folder = Path(folder)
    name = folder.name
    list_path = folder / f"{name}.list"
    archive_path = folder / "seq_labels.tar.gz"
    for p in (list_path, archive_path):
        if not p.exists():
            raise ProbeDataError(f"{p}: missing (expected a DNSS2 blind-test folder)")
    targets = [t.strip() for t in list_path.read_text().split() if t.strip()]
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            files = {
                Path(m.name).name: archive.extractfile(m).read().decode("ascii")
                for m in archive.getmembers()
                if m.isfile()
            }
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ProbeDataError(f"{archive_path}: unreadable archive ({err})") from None
    records = []
    for target in targets:
        where = f"{archive_path} target {target}"
        three, eight = files.get(f"{target}.ssa"), files.get(f"{target}.8class.ssa")
        if three is None or eight is None:
            raise ProbeDataError(f"{where}: {target}.ssa or {target}.8class.ssa missing")
        seq3, ss3 = _parse_ssa(three, f"{where} {target}.ssa")
        seq8, ss8 = _parse_ssa(eight, f"{where} {target}.8class.ssa")
        if seq3 != seq8:
            raise ProbeDataError(f"{where}: 3-state and 8-state tables list different residues")
        _check_lengths(where, sequence=len(seq3), ss3=len(ss3), ss8=len(ss8))
        records.append(
            SSRecord(
                id=target,
                sequence=_check_sequence(seq3, where),
                ss3=_check_labels(ss3, SS3_CLASSES, where, "3-state labels"),
                ss8=_check_labels(ss8, SS8_CLASSES, where, "8-state labels"),
                mask=np.ones(len(seq3), dtype=bool),
            )
        )
    return records
