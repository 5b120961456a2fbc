"""Contact test/training sets from user files (``probe.contacts`` path entries).

* PDB/mmCIF files (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, optionally ``.gz``): one chain per
  file (``file.cif:A``, else the first chain with at least 20 amino acids), model 1, Bio.PDB's
  altloc choice, insertion codes in order; Cβ (Cα for Gly) contacts below the cutoff; residues
  without coordinates are masked. Files without SEQRES: numbering gaps become unknown residues
  (``X``, masked). ``min_plddt`` masks residues whose Cα B-factor (AlphaFold: pLDDT) is lower.
* Backbone JSON (a list of records) or JSONL (one record per line), each record ``{name, seq,
  coords}`` with ``coords`` either per residue ``[[N, CA, C, O], ...]`` (TS50 layout) or per
  atom ``{"N": [...], "CA": [...], "C": [...], "O": [...]}`` (CATH/GVP ``chain_set`` layout);
  null or NaN marks a missing atom; the contact atom is a virtual Cβ (Cα for Gly).

A record in neither layout stops the run with an error naming the file and record; a structure
that cannot give a contact map (absent chain, no amino acids, ...) is skipped and counted.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.common.inputs import InputFile, UserSet, has_suffix
from wensu.probes.common.structures import (
    STRUCTURE_SUFFIXES,
    backbone_to_structure,
    parse_structure,
)
from wensu.probes.contacts.data import ContactSet
from wensu.progress import progress_bar

BACKBONE_SUFFIXES = (".json", ".jsonl")
CONTACT_SUFFIXES = (*STRUCTURE_SUFFIXES, *BACKBONE_SUFFIXES)
BACKBONE_ATOMS = ("N", "CA", "C", "O")


def _read_text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ProbeDataError(f"{path}: unreadable ({err})") from None


def backbone_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) of a JSON list (or {name: record} object) or a JSONL file."""
    text = _read_text(path)
    if has_suffix(path, (".jsonl",)):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield f"{path} line {number}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise ProbeDataError(f"{path} line {number}: not JSON ({err.msg})") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProbeDataError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        data = [{"name": k, **v} for k, v in data.items()]
    if not isinstance(data, list):
        raise ProbeDataError(f"{path}: expected a JSON list of {{name, seq, coords}} records")
    for index, record in enumerate(data):
        yield f"{path} record {index + 1}", record


def _atom(value: Any) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"an atom is [x, y, z], got {str(value)[:40]}")
    xyz = [float(v) if v is not None else math.nan for v in value]
    return None if any(math.isnan(v) for v in xyz) else xyz


def per_residue_backbone(record: dict, where: str) -> list[list[list[float] | None]]:
    """``coords`` of either layout as per-residue [N, CA, C, O] (None = missing atom)."""
    coords = record["coords"]
    try:
        if isinstance(coords, dict) and {"N", "CA", "C"} <= set(coords):
            columns = [coords.get(atom) or [None] * len(coords["CA"]) for atom in BACKBONE_ATOMS]
            lengths = {len(c) for c in columns}
            if len(lengths) != 1:
                raise ValueError(f"atom lists of different lengths {sorted(lengths)}")
            return [[_atom(column[i]) for column in columns] for i in range(lengths.pop())]
        if isinstance(coords, list) and all(
            r is None or (isinstance(r, (list, tuple)) and len(r) >= 3) for r in coords
        ):
            return [None if r is None else [_atom(a) for a in r[:4]] for r in coords]
    except (TypeError, ValueError) as err:
        raise ProbeDataError(f"{where}: malformed coordinates ({err})") from None
    shape = f"a {type(coords).__name__}"
    if isinstance(coords, dict):
        shape += f" with keys {sorted(coords)[:6]}"
    raise ProbeDataError(
        f"{where}: unknown backbone layout: 'coords' is {shape}; expected per-residue "
        "[[N, CA, C, O], ...] (TS50) or {N: [...], CA: [...], C: [...], O: [...]} (CATH chain_set)"
    )


def _backbone_set(file: InputFile, target: ContactSet) -> None:
    if file.selector:
        raise ProbeDataError(
            f"{file}: a chain selector applies to PDB/mmCIF files, not backbone JSON records"
        )
    for where, record in backbone_records(file.path):
        if not isinstance(record, dict) or not {"seq", "coords"} <= set(record):
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ProbeDataError(f"{where}: a record needs 'seq' and 'coords' (has {keys})")
        name = str(record.get("name") or f"{file.stem}_{len(target.structures) + 1}")
        backbone = per_residue_backbone(record, f"{where} ({name})")
        target.add(
            lambda name=name, seq=str(record["seq"]), bb=backbone, w=where: backbone_to_structure(
                name, seq, bb, w
            )
        )


def load_user_contact_set(
    user_set: UserSet,
    *,
    limit: int | None = None,
    select: str = "first",
    min_plddt: float | None = None,
    show_progress: bool = True,
) -> ContactSet:
    """Load a user set (see the module docstring); ``limit``/``select`` as for built-ins."""
    files = list(user_set.files)
    if select == "smallest":
        files.sort(key=lambda f: f.path.stat().st_size)
    result = ContactSet(name=user_set.name)
    for file in progress_bar(files, desc=f"parse {user_set.name}", enabled=show_progress):
        if limit is not None and len(result.structures) >= limit:
            break
        result.files.append(file.path)
        if has_suffix(file.path, BACKBONE_SUFFIXES):
            _backbone_set(file, result)
            continue
        result.add(
            lambda f=file: parse_structure(
                f.path,
                chain=f.selector,
                name=f"{f.stem}_{f.selector}" if f.selector else None,
                fill_gaps=True,
                min_plddt=min_plddt,
            )
        )
    result.structures = result.structures[:limit]
    return result
