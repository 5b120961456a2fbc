"""Out-of-core exact deduplication: which records are duplicates, in memory set by configuration.

"First occurrence wins" over the whole input, decided without holding every digest or id:

- A record's *ordinal* is its position among all valid records in input order (parts are in
  input order, so ordinal = the part's base + the record's index in it).
- The hash space is cut into partitions (ranges of the parts' key buckets, see
  :mod:`preprocessing.parts`) small enough for ``memory_limit``; each partition is one task
  that reads its slice of every part's sorted key table, sorts it by (hash, ordinal) with numpy
  and decides for its records. Tasks share nothing but one flag byte per record in
  ``flags.u8`` (a file; each task touches only its own records' bytes).

Two passes give exactly the decisions of the sequential merge (:mod:`preprocessing.dedup`):

1. ids: a record whose id occurred at an earlier valid record gets bit ``ID_SEEN``. (Every valid
   record's id counts as seen, whatever its own fate.)
2. digests: in each group of equal sequences (by ordinal), the first record without
   ``ID_SEEN`` is kept; the group's records before it are ``DUPLICATE_ID`` (their id was used
   and no copy was kept yet), those after it ``DUPLICATE`` of it. A group whose every record
   has ``ID_SEEN`` is all ``DUPLICATE_ID``.

Pass 2 also writes, per partition, the duplicates' ordinals (sorted) with their kept record's
ordinal, from which the report stage writes ``duplicates.tsv`` in input order. The driver
writes a partition's results before its ``.done`` marker, so a killed run redoes only
unfinished partitions. Ids and sequences are compared by BLAKE2b-128.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .parts import BUCKETS, PartReader

ID_SEEN = 1
# Decision codes of pass 2, stored in bits 1-2 of the flag byte (0: first occurrence).
FLAG_DUPLICATE, FLAG_DUPLICATE_ID = 1, 2
# Bytes of working memory per key in a partition task (keys, sort order, gathered copies,
# group arrays), measured with tracemalloc on a 1 M-key partition and rounded up.
BYTES_PER_KEY = 112


@dataclass(frozen=True)
class PartRef:
    """A part as the partition tasks see it: its directory and first ordinal."""

    directory: str
    base: int
    valid: int


@dataclass(frozen=True)
class PartitionTask:
    """One partition: buckets ``[first, end)`` of the ``kind`` ("i" ids, "d" digests) tables."""

    kind: str
    index: int
    first: int
    end: int
    parts: tuple[PartRef, ...]
    flags: str
    out_dir: str


def plan_partitions(bucket_counts: np.ndarray, budget_keys: int, what: str) -> list[tuple]:
    """Consecutive bucket ranges ``(first, end)`` holding at most ``budget_keys`` keys each.

    A single bucket above the budget (many records with one hash prefix, e.g. a sequence
    repeated millions of times) cannot be split: a :class:`MemoryError` says so.
    """
    biggest = int(bucket_counts.max(initial=0))
    if biggest > budget_keys:
        raise MemoryError(
            f"{biggest:,} {what} share one hash bucket but memory_limit leaves room for "
            f"{budget_keys:,} keys per partition"
        )
    ranges, first, total = [], 0, 0
    for bucket, count in enumerate(bucket_counts.tolist()):
        if total + count > budget_keys:
            ranges.append((first, bucket))
            first, total = bucket, 0
        total += count
    ranges.append((first, BUCKETS))
    return ranges


def _gather(task: PartitionTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The partition's keys over all parts: (high, low, ordinal), sorted by all three."""
    pieces = []
    for ref in task.parts:
        if not ref.valid:
            continue
        rows = PartReader(ref.directory).keys(task.kind, task.first, task.end)
        if rows.size:
            rows = rows.copy()
            rows[:, 2] += np.uint64(ref.base)
            pieces.append(rows)
    if not pieces:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty, empty.astype(np.int64)
    keys = np.concatenate(pieces)
    del pieces
    order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
    keys = keys[order]
    return keys[:, 0], keys[:, 1], keys[:, 2].astype(np.int64)


def _group_starts(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """True where a run of equal (high, low) begins."""
    starts = np.ones(high.size, dtype=bool)
    starts[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    return starts


def partition_done(out_dir: Path, kind: str, index: int) -> Path:
    return Path(out_dir) / f"{kind}-{index:05d}.done"


def run_partition(task: PartitionTask) -> dict:
    """Decide for one partition (pass 1 for kind "i", pass 2 for "d").

    Reads the parts and the flag file only; what it found comes back as arrays that
    :func:`apply_partition` writes, so a task may run anywhere, twice, or be retried.
    """
    high, low, ordinals = _gather(task)
    if task.kind == "i":
        return {"repeated": ordinals[~_group_starts(high, low)], "keys": int(ordinals.size)}
    return _decide_digests(task, high, low, ordinals)


def _decide_digests(task: PartitionTask, high, low, ordinals) -> dict:
    count = ordinals.size
    empty = np.zeros(0, dtype=np.int64)
    if not count:
        return {"targets": empty, "marks": empty.astype(np.uint8),
                "pairs": np.zeros((0, 2), dtype=np.int64), "keys": 0}  # fmt: skip
    flags = np.memmap(task.flags, dtype=np.uint8, mode="r")
    by_ordinal = np.argsort(ordinals)  # read the flag file front to back
    seen = np.empty(count, dtype=bool)
    seen[by_ordinal] = (np.asarray(flags[ordinals[by_ordinal]]) & ID_SEEN).astype(bool)
    del flags, by_ordinal
    group = np.cumsum(_group_starts(high, low)) - 1
    del high, low
    # The kept record of each group: its first record whose id was not seen before.
    kept_at = np.full(int(group[-1]) + 1, count, dtype=np.int64)
    candidates = np.flatnonzero(~seen)
    groups_with, first = np.unique(group[candidates], return_index=True)
    kept_at[groups_with] = candidates[first]
    kept = kept_at[group]
    del kept_at, candidates, seen, group
    position = np.arange(count, dtype=np.int64)
    duplicate_id = position < kept
    duplicate = position > kept
    marks = np.zeros(count, dtype=np.uint8)
    marks[duplicate] = FLAG_DUPLICATE << 1
    marks[duplicate_id] = FLAG_DUPLICATE_ID << 1
    changed = np.flatnonzero(marks)
    targets = ordinals[changed]
    order = np.argsort(targets)
    pairs = np.stack([ordinals[duplicate], ordinals[kept[duplicate]]], axis=1)
    return {
        "targets": targets[order],
        "marks": marks[changed][order],
        "pairs": pairs[np.argsort(pairs[:, 0])],
        "keys": int(count),
    }


def apply_partition(task: PartitionTask, result: dict) -> dict:
    """Write a partition's result (flag bits, duplicate pairs), then its ``.done`` marker;
    returns the small summary kept in the marker."""
    flags = np.memmap(task.flags, dtype=np.uint8, mode="r+")
    if task.kind == "i":
        repeated = np.sort(result["repeated"])
        if repeated.size:
            flags[repeated] |= np.uint8(ID_SEEN)
        summary = {"keys": result["keys"], "repeated_ids": int(repeated.size)}
    else:
        targets = result["targets"]
        if targets.size:
            flags[targets] = (np.asarray(flags[targets]) & ID_SEEN) | result["marks"]
        dup_path = Path(task.out_dir) / f"dups-{task.index:05d}.npy"
        tmp = dup_path.with_name(dup_path.stem + ".tmp.npy")
        np.save(tmp, result["pairs"])
        os.replace(tmp, dup_path)
        summary = {"keys": result["keys"], "duplicates": int(result["pairs"].shape[0])}
    flags.flush()
    del flags
    done = partition_done(task.out_dir, task.kind, task.index)
    tmp = done.with_name(done.name + ".tmp")
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, done)
    return summary


class DuplicatePairs:
    """The (duplicate ordinal, kept ordinal) pairs of every digest partition, read by range."""

    def __init__(self, out_dir: Path, partitions: int):
        self.tables = []
        for index in range(partitions):
            path = Path(out_dir) / f"dups-{index:05d}.npy"
            mode = "r" if path.stat().st_size > 256 else None
            self.tables.append(np.load(path, mmap_mode=mode, allow_pickle=False))

    def between(self, first: int, end: int) -> np.ndarray:
        """Pairs whose duplicate ordinal is in ``[first, end)``, by that ordinal."""
        found = []
        for table in self.tables:
            if not table.shape[0]:
                continue
            column = table[:, 0]
            lo, hi = np.searchsorted(column, [first, end])
            if hi > lo:
                found.append(np.asarray(table[lo:hi]))
        if not found:
            return np.zeros((0, 2), dtype=np.int64)
        pairs = np.concatenate(found)
        return pairs[np.argsort(pairs[:, 0], kind="stable")]
