"""The sequential merge: duplicate ids, exact-duplicate sequences, length and status filters.

Parts are merged strictly in input order, so "first occurrence wins" means the same thing
whatever the number of workers. Each valid record gets one decision code; every record that is
not kept is written, with its reason, to ``quarantine.tsv`` or ``duplicates.tsv``, or counted
under ``filtered_by_reason``. Duplicate sequences are recognised by their BLAKE2b-128 digest.

Order of checks for a valid record: same sequence as an earlier record -> duplicate (even when
its id repeats too); otherwise an id seen before -> quarantined ``duplicate_id``; otherwise the
filters: ``inactive`` (UniParc, with ``require_active``), ``too_short``, ``too_long`` (only
with ``long_policy=drop``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TextIO

import numpy as np

from .parse import DIGEST_SIZE, Part

KEEP, DUPLICATE, DUPLICATE_ID, INACTIVE, TOO_SHORT, TOO_LONG = range(6)
FILTER_REASONS = {INACTIVE: "inactive", TOO_SHORT: "too_short", TOO_LONG: "too_long"}
QUARANTINE_HEADER = "id\treason\tfile\tline\tdetail\n"
DUPLICATES_HEADER = "kept_id\tdropped_id\tfile\tline\n"


def _clean(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class Merger:
    """Applies the decisions part by part and writes the two TSV reports as it goes."""

    def __init__(
        self,
        files: list[str],
        quarantine: TextIO,
        duplicates: TextIO,
        *,
        min_length: int,
        max_length: int | None,
        drop_long: bool,
    ):
        self.files = files
        self.quarantine, self.duplicates = quarantine, duplicates
        self.min_length, self.max_length, self.drop_long = min_length, max_length, drop_long
        self.seen_sequences: dict[bytes, str] = {}
        self.seen_ids: set[str] = set()
        self.read = 0
        self.kept = 0
        self.duplicate_count = 0
        self.quarantined: Counter[str] = Counter()
        self.filtered: Counter[str] = Counter()
        self.records_by_file: Counter[int] = Counter()
        # Lines in parts are relative to their unit; units of one file are merged in order.
        self._line_base: dict[int, int] = {}
        self._next_file_base: dict[int, int] = {}
        quarantine.write(QUARANTINE_HEADER)
        duplicates.write(DUPLICATES_HEADER)

    def merge(self, part: Part) -> np.ndarray:
        """Decision code (``KEEP``, ``DUPLICATE``, ...) for each valid record of ``part``."""
        meta = part.meta
        file_index = meta["file_index"]
        if meta["part"] == 0:
            self._line_base[meta["unit"]] = self._next_file_base.pop(file_index, 0)
        base = self._line_base[meta["unit"]]
        file_name = self.files[file_index]
        self.read += meta["records"]
        self.records_by_file[file_index] += meta["records"]
        rows = [(line, [rid, reason, detail]) for rid, reason, detail, line, _ in part.rejected]
        lengths = np.diff(part.seq_offsets).tolist()
        codes = np.zeros(len(part.ids), dtype=np.int8)
        seen_sequences, seen_ids = self.seen_sequences, self.seen_ids
        digests, lines, inactive = part.digests, part.lines.tolist(), part.inactive.tolist()
        min_length, max_length = self.min_length, self.max_length or 0
        dup_rows = []
        for i, record_id in enumerate(part.ids):
            digest = digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
            kept_id = seen_sequences.get(digest)
            if kept_id is not None:
                codes[i] = DUPLICATE
                dup_rows.append(f"{kept_id}\t{record_id}\t{file_name}\t{lines[i] + base}\n")
                seen_ids.add(record_id)
                continue
            if record_id in seen_ids:
                codes[i] = DUPLICATE_ID
                detail = "id already used by an earlier record with another sequence"
                rows.append((lines[i], [record_id, "duplicate_id", detail]))
                continue
            seen_sequences[digest] = record_id
            seen_ids.add(record_id)
            if inactive[i]:
                codes[i] = INACTIVE
            elif lengths[i] < min_length:
                codes[i] = TOO_SHORT
            elif max_length and lengths[i] > max_length and self.drop_long:
                codes[i] = TOO_LONG
        self.duplicates.writelines(dup_rows)
        self.duplicate_count += len(dup_rows)
        rows.sort(key=lambda row: row[0])
        for line, (rid, reason, detail) in rows:
            self.quarantined[reason] += 1
            self.quarantine.write(
                f"{_clean(rid)}\t{reason}\t{file_name}\t{line + base}\t{_clean(detail)}\n"
            )
        for code, reason in FILTER_REASONS.items():
            count = int(np.count_nonzero(codes == code))
            if count:
                self.filtered[reason] += count
        self.kept += int(np.count_nonzero(codes == KEEP))
        if meta["last"]:
            # The next unit of the same file starts where this one's lines end.
            self._next_file_base[file_index] = base + meta["end_line"] - 1
        return codes


def open_report(path: Path) -> TextIO:
    """A report file written under a temporary name (renamed by :func:`publish_report`)."""
    return open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8", newline="\n")


def publish_report(handle: TextIO, path: Path) -> None:
    """Flush, fsync and rename a report opened with :func:`open_report`."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(handle.name, path)
