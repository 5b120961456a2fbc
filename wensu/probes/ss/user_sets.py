"""Secondary-structure test sets from user files (``probe.ss.test_sets`` path entries).

Formats, told apart by suffix (``.gz`` allowed):

* ``.csv``: ``id,seq,q3[,q8]`` (NetSurfP-style, one character per residue), or the ProtTrans
  NetSurfP-2.0 CSV (``input, dssp3, dssp8, disorder[, cb513_mask]``) the built-ins use.
* ``.fasta`` / ``.fa``: 3-line records ``>id`` / sequence / labels. A file whose labels use any
  of ``G I B T S P`` is 8-state (Q3 derived from it), otherwise 3-state (``H E C``).
* ``.dssp``: classic DSSP output (mkdssp ``--output-format dssp``).
* ``.pdb`` / ``.ent`` / ``.cif`` / ``.mmcif``: structures, labelled by running ``mkdssp``.

Labels are reduced as the built-ins are: DSSP ``H G I E B T S`` are the 8 states, ``P``
(polyproline, DSSP 4) and loop are ``C``; Q3 is H,G,I -> H, E,B -> E, the rest -> C. ``-`` in a
label string marks a residue that is not scored (unresolved). Structure and DSSP files give one
chain each: the ``:A`` selector's chain, else the first chain with at least 20 amino acids; the
sequence is the chain's SEQRES with unobserved residues not scored.

A malformed text file stops the run with one line naming the file, row and reason; a structure
that gives no labels (no such chain, not protein, DSSP failure) is skipped and counted by reason.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wensu.probes.common.errors import ProbeDataError, SkipLog
from wensu.probes.common.inputs import InputFile, UserSet, has_suffix
from wensu.probes.common.structures import STRUCTURE_SUFFIXES
from wensu.probes.ss.data import (
    SS3_CLASSES,
    SS8_CLASSES,
    SS8_TO_SS3,
    SSRecord,
    _check_sequence,
    _open_text,
    read_netsurfp_csv,
)
from wensu.probes.ss.dssp import dssp_file_record, structure_ss_record

SS_SUFFIXES = (".csv", ".fasta", ".fa", ".dssp", *STRUCTURE_SUFFIXES)
UNSCORED = "-"
_EIGHT_STATE_ONLY = set("GIBTSP")


@dataclass(kw_only=True)
class UserSSSet(SkipLog):
    """Records of one user set plus the structures skipped, by reason."""

    name: str
    records: list[SSRecord] = field(default_factory=list)


def labelled_record(
    record_id: str, sequence: str, q3: str | None, q8: str | None, where: str
) -> SSRecord:
    """An SSRecord from label strings; checks lengths and letters (``-`` = not scored)."""
    sequence = _check_sequence(sequence.strip(), where)
    if not sequence:
        raise ProbeDataError(f"{where}: empty sequence")
    texts = {"q3": q3, "q8": q8}
    for column, text in texts.items():
        if text is None:
            continue
        if len(text) != len(sequence):
            raise ProbeDataError(
                f"{where}: {column} has {len(text)} labels for {len(sequence)} residues"
            )
        allowed = (SS3_CLASSES if column == "q3" else SS8_CLASSES + "P") + UNSCORED
        bad = sorted(set(text) - set(allowed))
        if bad:
            raise ProbeDataError(
                f"{where}: {column} has unknown labels {''.join(bad)!r} (allowed: {allowed})"
            )
    mask = np.ones(len(sequence), dtype=bool)
    for text in texts.values():
        if text is not None:
            mask &= np.frombuffer(text.encode("ascii"), np.uint8) != ord(UNSCORED)
    ss8 = None if q8 is None else q8.replace("P", "C").replace(UNSCORED, "C")
    if q3 is None and ss8 is not None:
        q3 = "".join(SS8_TO_SS3[c] for c in ss8)
    ss3 = None if q3 is None else q3.replace(UNSCORED, "C")
    return SSRecord(id=record_id, sequence=sequence, ss3=ss3, ss8=ss8, mask=mask)


def read_label_csv(path: Path) -> list[SSRecord]:
    """``id,seq,q3[,q8]`` CSV, or the ProtTrans NetSurfP-2.0 CSV (told apart by the header)."""
    with _open_text(path) as handle:
        header = [h.strip().lower() for h in next(csv.reader(handle), [])]
    if not header:
        raise ProbeDataError(f"{path}: empty file")
    if "input" in header and "dssp3" in header:
        return read_netsurfp_csv(path, name=path.name.split(".")[0])
    missing = [c for c in ("id", "seq", "q3") if c not in header]
    if missing:
        raise ProbeDataError(
            f"{path}: header {header} lacks {missing} (expected id,seq,q3[,q8] or the "
            "NetSurfP-2.0 input,dssp3,dssp8,disorder)"
        )
    records = []
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        for line, row in enumerate(reader, start=2):
            where = f"{path} line {line}"
            if None in row or any(row.get(c) is None for c in ("id", "seq", "q3")):
                raise ProbeDataError(f"{where}: {len(header)} columns expected")
            q8 = (row.get("q8") or "").strip() or None
            records.append(
                labelled_record(row["id"].strip(), row["seq"], row["q3"].strip(), q8, where)
            )
    if not records:
        raise ProbeDataError(f"{path}: no records")
    return records


def read_three_line_fasta(path: Path) -> list[SSRecord]:
    """``>id`` / sequence / labels records; 8-state when any label is one of G I B T S P."""
    with _open_text(path) as handle:
        lines = [(n, line.strip()) for n, line in enumerate(handle, start=1) if line.strip()]
    if not lines:
        raise ProbeDataError(f"{path}: empty file")
    raw = []
    for start in range(0, len(lines), 3):
        chunk = lines[start : start + 3]
        number, header = chunk[0]
        where = f"{path} record {start // 3 + 1} (line {number})"
        if not header.startswith(">"):
            raise ProbeDataError(f"{where}: expected a '>' header line, got {header[:30]!r}")
        if len(chunk) < 3 or any(text.startswith(">") for _, text in chunk[1:]):
            raise ProbeDataError(f"{where}: a record is 3 lines: >header, sequence, labels")
        raw.append(
            (header[1:].split()[0] if header[1:].split() else "", chunk[1][1], chunk[2][1], where)
        )
    eight = any(_EIGHT_STATE_ONLY & set(labels) for _, _, labels, _ in raw)
    return [
        labelled_record(
            rid or f"{path.stem}_{i + 1}",
            seq,
            None if eight else labels,
            labels if eight else None,
            where,
        )
        for i, (rid, seq, labels, where) in enumerate(raw)
    ]


def _structure_record(file: InputFile) -> SSRecord:
    if has_suffix(file.path, (".dssp",)):
        return dssp_file_record(file.path, file.selector)
    return structure_ss_record(file.path, file.selector)


def load_user_ss_set(user_set: UserSet) -> UserSSSet:
    """Read every file of a user set (see the module docstring for formats and errors)."""
    result = UserSSSet(name=user_set.name)
    for file in user_set.files:
        result.files.append(file.path)
        if has_suffix(file.path, (".csv",)):
            result.records += read_label_csv(file.path)
        elif has_suffix(file.path, (".fasta", ".fa")):
            result.records += read_three_line_fasta(file.path)
        else:
            result.attempt(lambda file=file: _structure_record(file), result.records)
    ids = Counter(r.id for r in result.records)
    repeated = sorted(i for i, n in ids.items() if n > 1)
    if repeated:
        raise ProbeDataError(
            f"SS set {user_set.name!r} ({user_set.entry}): record ids listed twice: {repeated[:5]}"
        )
    if not result.records:
        detail = "; ".join(result.errors[:3])
        raise ProbeDataError(
            f"SS set {user_set.name!r} ({user_set.entry}): no usable records"
            + (f" ({detail})" if detail else "")
        )
    return result
