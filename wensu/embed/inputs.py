"""Reading the FASTA input of ``wensu-embed``: one validating pre-pass, then streaming.

The pre-pass reads every record once and keeps only ids, lengths, record ordinals (position
in the file's record stream) and sequence digests: it finds duplicate ids and invalid records
before anything is embedded, and gives the progress bar its total. Workers then stream the file
again and pick their records by ordinal, so sequences are never all held in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wensu.data.fasta import FastaError, FastaRecord, check_record, iter_raw_records, residue_bytes


class InputError(ValueError):
    """The FASTA input cannot be embedded: unreadable, empty, or with duplicate ids."""


@dataclass
class InputScan:
    """Result of the pre-pass: the records to embed (input order) and what was set aside."""

    ids: list[str]
    ordinals: np.ndarray  # int64 position of each selected record in the record stream
    lengths: np.ndarray  # int64 residues of each selected record
    quarantined: list[tuple[str, str, str]]  # (id, reason, detail)
    duplicates: int  # records dropped by dedup
    records: int  # records read
    digests: list[str] = field(default_factory=list)  # sequence_digest of each selected record


def _records(path: Path) -> Iterator[tuple[int, str, bytes | None, tuple[str, str]]]:
    """``(ordinal, id, upper-case residues or None, (reason, detail))`` per record, using the
    shared FASTA reader's validation (gap symbols are refused: they are not residues)."""
    valid = residue_bytes(allow_gaps=False)
    try:
        for ordinal, raw in enumerate(iter_raw_records(path)):
            checked = check_record(raw, valid)
            if isinstance(checked, FastaRecord):
                yield ordinal, checked.id, checked.sequence, ("", "")
            else:
                detail = f"line {checked.line}: {checked.detail}"
                yield ordinal, checked.id, None, (checked.reason, detail)
    except FastaError as err:
        raise InputError(str(err)) from None
    except OSError as err:
        raise InputError(f"input {path}: cannot be read ({err})") from None


def sequence_digest(sequence: bytes) -> str:
    """SHA-256 of a record's (upper-case) residues: what an embedding is of."""
    return hashlib.sha256(sequence).hexdigest()


def scan_input(path: Path, dedup: bool = False) -> InputScan:
    """Validate ``path`` and list the records to embed; clear errors if empty or duplicated."""
    ids: list[str] = []
    ordinals: list[int] = []
    lengths: list[int] = []
    digests: list[str] = []
    quarantined: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    repeated: Counter[str] = Counter()
    records = 0
    for ordinal, record_id, sequence, (reason, detail) in _records(path):
        records += 1
        if sequence is None:
            quarantined.append((record_id, reason, detail))
            continue
        if record_id in seen:
            repeated[record_id] += 1
            continue
        seen.add(record_id)
        ids.append(record_id)
        ordinals.append(ordinal)
        lengths.append(len(sequence))
        digests.append(sequence_digest(sequence))
    if records == 0:
        raise InputError(f"input {path}: no FASTA records (empty file?)")
    if repeated and not dedup:
        shown = ", ".join(sorted(repeated)[:10])
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise InputError(
            f"input {path}: {len(repeated)} duplicate id(s): {shown}{more}; "
            "make ids unique or pass dedup=true to keep the first record of each id"
        )
    if not ids:
        raise InputError(
            f"input {path}: none of its {records} records is a valid protein sequence "
            f"(first: {quarantined[0][0]!r}: {quarantined[0][1]}, {quarantined[0][2]})"
        )
    return InputScan(
        ids=ids,
        ordinals=np.asarray(ordinals, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        quarantined=quarantined,
        duplicates=sum(repeated.values()),
        records=records,
        digests=digests,
    )


def iter_selected(
    path: Path, ordinals: Sequence[int] | np.ndarray
) -> Iterator[tuple[int, str, bytes]]:
    """Stream ``(ordinal, id, residues)`` for the records at the given (ascending) ordinals."""
    wanted = iter(np.asarray(ordinals, dtype=np.int64).tolist())
    target = next(wanted, None)
    if target is None:
        return
    for ordinal, record_id, sequence, _ in _records(path):
        if ordinal == target:
            if sequence is None:
                raise InputError(f"input {path} changed while embedding (record {record_id!r})")
            yield ordinal, record_id, sequence
            target = next(wanted, None)
            if target is None:
                return


def quarantine_path(output: Path) -> Path:
    """``<output>.quarantine.tsv``."""
    return output.with_name(output.name + ".quarantine.tsv")


def write_quarantine(output: Path, quarantined: Sequence[tuple[str, str, str]]) -> Path | None:
    """Write the quarantined records as TSV (id, reason, detail); remove a stale one when none."""
    path = quarantine_path(output)
    if not quarantined:
        if path.exists():
            path.unlink()
        return None
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("id\treason\tdetail\n")
        for record_id, reason, detail in quarantined:
            clean = " ".join(detail.split())
            handle.write(f"{record_id}\t{reason}\t{clean}\n")
    os.replace(tmp, path)
    return path
