"""The report stage: decision codes per part, duplicate ids, exact duplicates, filters, TSVs.

Which records repeat an earlier sequence or id is decided out of core (:mod:`.decide`); parts
are then read strictly in input order here, so "first occurrence wins" means the same thing
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

from .decide import FLAG_DUPLICATE, FLAG_DUPLICATE_ID
from .parts import PartReader

KEEP, DUPLICATE, DUPLICATE_ID, INACTIVE, TOO_SHORT, TOO_LONG = range(6)
FILTER_REASONS = {INACTIVE: "inactive", TOO_SHORT: "too_short", TOO_LONG: "too_long"}
QUARANTINE_HEADER = "id\treason\tfile\tline\tdetail\n"
DUPLICATES_HEADER = "kept_id\tdropped_id\tfile\tline\n"


def _clean(text: str) -> str:
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class Merger:
    """Turns the out-of-core decisions (:mod:`preprocessing.decide`) into each part's codes,
    in input order, and writes the two TSV reports as it goes."""

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

    def merge(
        self, part: PartReader, flags: np.ndarray, pairs: np.ndarray, kept_ids: list[str]
    ) -> np.ndarray:
        """Decision code (``KEEP``, ``DUPLICATE``, ...) for each valid record of ``part``.

        ``flags``: the part's flag bytes (``decide``); ``pairs``: (duplicate ordinal, kept
        ordinal) of its duplicates, relative to the part's first ordinal; ``kept_ids`` the ids
        of those kept records.
        """
        meta = part.meta
        file_index = meta["file_index"]
        if meta["part"] == 0:
            self._line_base[meta["unit"]] = self._next_file_base.pop(file_index, 0)
        base = self._line_base[meta["unit"]]
        file_name = self.files[file_index]
        self.read += meta["records"]
        self.records_by_file[file_index] += meta["records"]
        rows = [(line, [rid, reason, detail]) for rid, reason, detail, line, _ in meta["rejected"]]
        decision = flags >> 1
        codes = np.zeros(part.valid, dtype=np.int8)
        codes[decision == FLAG_DUPLICATE] = DUPLICATE
        codes[decision == FLAG_DUPLICATE_ID] = DUPLICATE_ID
        lines = np.asarray(part.column("lines")) if part.valid else np.zeros(0, np.int64)
        duplicate_ids = np.flatnonzero(codes == DUPLICATE_ID)
        if duplicate_ids.size:
            detail = "id already used by an earlier record with another sequence"
            ids = part.ids_at(duplicate_ids)
            for record_id, line in zip(ids, lines[duplicate_ids].tolist(), strict=True):
                rows.append((line, [record_id, "duplicate_id", detail]))
        if pairs.shape[0]:
            dropped = pairs[:, 0]
            dropped_ids = part.ids_at(dropped)
            dup_lines = (lines[dropped] + base).tolist()
            self.duplicates.writelines(
                f"{kept}\t{rid}\t{file_name}\t{line}\n"
                for kept, rid, line in zip(kept_ids, dropped_ids, dup_lines, strict=True)
            )
            self.duplicate_count += int(pairs.shape[0])
        rows.sort(key=lambda row: row[0])
        for line, (rid, reason, detail) in rows:
            self.quarantined[reason] += 1
            self.quarantine.write(
                f"{_clean(rid)}\t{reason}\t{file_name}\t{line + base}\t{_clean(detail)}\n"
            )
        first = codes == KEEP
        if part.valid:
            self._filter(part, codes, first)
        for code, reason in FILTER_REASONS.items():
            count = int(np.count_nonzero(codes == code))
            if count:
                self.filtered[reason] += count
        self.kept += int(np.count_nonzero(codes == KEEP))
        if meta["last"]:
            # The next unit of the same file starts where this one's lines end.
            self._next_file_base[file_index] = base + meta["end_line"] - 1
        return codes

    def _filter(self, part: PartReader, codes: np.ndarray, first: np.ndarray) -> None:
        """Filter codes of the first occurrences: inactive, too short, too long (drop)."""
        lengths = part.lengths()
        inactive = np.asarray(part.column("inactive"), dtype=bool)
        codes[first & inactive] = INACTIVE
        left = first & ~inactive
        codes[left & (lengths < self.min_length)] = TOO_SHORT
        if self.max_length and self.drop_long:
            codes[left & (lengths >= self.min_length) & (lengths > self.max_length)] = TOO_LONG


def open_report(path: Path) -> TextIO:
    """A report file written under a temporary name (renamed by :func:`publish_report`)."""
    return open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8", newline="\n")


def publish_report(handle: TextIO, path: Path) -> None:
    """Flush, fsync and rename a report opened with :func:`open_report`."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(handle.name, path)
