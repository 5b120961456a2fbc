"""Shards written by workers: a plan of which part slices make each shard, and the task.

Records reach the shards of their split in input order, cut by ``long_policy`` into pieces,
and every ``shard_size_records`` pieces make a shard (the last one smaller), exactly as
:class:`~preprocessing.sharding.SplitWriter` cuts them. Once the report stage has fixed each
part's codes, the number of pieces each part gives each split is known, so the shards can be
planned up front as lists of (part, piece range) slices and written by independent tasks, in
any order and on any worker, to the same bytes.

A written shard's manifest entry and statistics go to the journal ``shards.jsonl`` (one JSON
line each); a rerun reuses a journaled shard whose file still has its SHA-256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wensu.data.shards import sha256_file, shard_name, write_shard

from .config import SPLIT_NAMES
from .dedup import KEEP
from .errors import write_failure
from .parts import PartReader
from .split import cut_long
from .stats import SequenceStats
from .workdir import crash_once_for_tests


@dataclass(frozen=True)
class ShardSlice:
    """Pieces ``[start, end)`` of the pieces ``part`` gives the shard's split; the part's
    codes are bytes ``[base, base + valid)`` of ``codes``."""

    part: str
    codes: str
    base: int
    valid: int
    start: int
    end: int


def read_codes(path: str | Path, base: int, count: int) -> np.ndarray:
    """Codes of ``count`` records from ordinal ``base`` in the run's codes file."""
    with open(path, "rb") as handle:
        handle.seek(base)
        return np.frombuffer(handle.read(count), dtype=np.int8)


@dataclass(frozen=True)
class ShardTask:
    dataset_dir: str
    split: str
    index: int
    slices: tuple[ShardSlice, ...]
    max_length: int | None
    long_policy: str
    source: str

    @property
    def relative(self) -> str:
        return f"{self.split}/{shard_name(self.index)}"

    @property
    def records(self) -> int:
        return sum(s.end - s.start for s in self.slices)


def piece_counts(lengths: np.ndarray, max_length: int | None, long_policy: str) -> np.ndarray:
    """Pieces each record becomes (``split`` cuts ceil(L / max_length); others keep one)."""
    if max_length is None or long_policy != "split":
        return np.ones(lengths.size, dtype=np.int64)
    return np.maximum(-(-lengths // max_length), 1)


def kept_of_split(part: PartReader, codes: np.ndarray, split_index: int) -> np.ndarray:
    """Indices of the part's kept records that go to split ``split_index``."""
    splits = np.asarray(part.column("splits"))
    return np.flatnonzero((codes == KEEP) & (splits == split_index))


class ShardPlanner:
    """Cuts the pieces of each split, part after part, into shard tasks."""

    def __init__(self, dataset_dir: Path, codes: Path, shard_size: int, max_length, long_policy,
                 source):  # fmt: skip
        self.settings = (str(dataset_dir), max_length, long_policy, source)
        self.codes = str(codes)
        self.shard_size = shard_size
        self.pending: dict[str, list[ShardSlice]] = {s: [] for s in SPLIT_NAMES}
        self.filled = dict.fromkeys(SPLIT_NAMES, 0)
        self.count = dict.fromkeys(SPLIT_NAMES, 0)
        self.pieces = 0

    def add(self, part: PartReader, base: int, codes: np.ndarray) -> Iterator[ShardTask]:
        """Shards completed by this part's kept records (``codes`` as the report stage made,
        from ordinal ``base`` on)."""
        splits = np.asarray(part.column("splits"))
        lengths = part.lengths()
        _, max_length, long_policy, _ = self.settings
        for split_index, split in enumerate(SPLIT_NAMES):
            kept = np.flatnonzero((codes == KEEP) & (splits == split_index))
            total = int(piece_counts(lengths[kept], max_length, long_policy).sum())
            self.pieces += total
            start = 0
            while start < total:
                take = min(total - start, self.shard_size - self.filled[split])
                piece = ShardSlice(str(part.directory), self.codes, base, codes.size, start,
                                   start + take)  # fmt: skip
                self.pending[split].append(piece)
                self.filled[split] += take
                start += take
                if self.filled[split] == self.shard_size:
                    yield self._task(split)

    def flush(self) -> Iterator[ShardTask]:
        for split in SPLIT_NAMES:
            if self.filled[split]:
                yield self._task(split)

    def _task(self, split: str) -> ShardTask:
        dataset_dir, max_length, long_policy, source = self.settings
        task = ShardTask(dataset_dir, split, self.count[split], tuple(self.pending[split]),
                         max_length, long_policy, source)  # fmt: skip
        self.pending[split], self.filled[split] = [], 0
        self.count[split] += 1
        return task


def _slice_records(task: ShardTask, piece: ShardSlice, split_index: int):
    part = PartReader(piece.part)
    kept = kept_of_split(part, read_codes(piece.codes, piece.base, piece.valid), split_index)
    counts = piece_counts(part.lengths()[kept], task.max_length, task.long_policy)
    ends = np.cumsum(counts)
    starts = ends - counts
    first = int(np.searchsorted(ends, piece.start, side="right"))
    end = int(np.searchsorted(starts, piece.end, side="left"))
    rows = kept[first:end]
    ids = part.ids_at(rows)
    sequences = part.sequences_at(rows.tolist())
    taxa = np.asarray(part.column("taxa"))[rows].tolist()
    if task.max_length is None or max((len(s) for s in sequences), default=0) <= task.max_length:
        return ids, sequences, taxa
    out_ids, out_sequences, out_taxa = [], [], []
    for record_id, sequence, taxon in zip(ids, sequences, taxa, strict=True):
        for piece_id, cut in cut_long(record_id, sequence, task.max_length, task.long_policy):
            out_ids.append(piece_id)
            out_sequences.append(cut)
            out_taxa.append(taxon)
    skip = piece.start - int(starts[first]) if rows.size else 0
    size = piece.end - piece.start
    return (out_ids[skip : skip + size], out_sequences[skip : skip + size],
            out_taxa[skip : skip + size])  # fmt: skip


def write_shard_task(task: ShardTask) -> dict:
    """Gather the shard's pieces from its parts and write it; its entry and statistics
    (``{"error": message}`` when the shard cannot be written, e.g. a full disk)."""
    crash_once_for_tests()
    split_index = SPLIT_NAMES.index(task.split)
    ids: list[str] = []
    sequences: list[bytes] = []
    taxa: list[int] = []
    for piece in task.slices:
        slice_ids, slice_sequences, slice_taxa = _slice_records(task, piece, split_index)
        ids += slice_ids
        sequences += slice_sequences
        taxa += slice_taxa
    attrs = {"split": task.split, "source": task.source}
    target = Path(task.dataset_dir) / task.relative
    try:
        entry = write_shard(target, ids, sequences, taxa=taxa, attrs=attrs)
    except OSError as err:  # write_shard removed its temporary file
        return {"error": write_failure(err, target)}
    stats = SequenceStats()
    stats.add_many(sequences)
    return {"entry": entry, "stats": stats_to_json(stats)}


def stats_to_json(stats: SequenceStats) -> dict:
    lengths = np.flatnonzero(stats.length_counts)
    residues = np.flatnonzero(stats.residue_counts)
    return {
        "lengths": [lengths.tolist(), stats.length_counts[lengths].tolist()],
        "residues": [residues.tolist(), stats.residue_counts[residues].tolist()],
    }


def stats_from_json(data: dict) -> SequenceStats:
    stats = SequenceStats()
    lengths, counts = data["lengths"]
    if lengths:
        stats.length_counts = np.zeros(max(lengths) + 1, dtype=np.int64)
        stats.length_counts[lengths] = counts
    values, counts = data["residues"]
    stats.residue_counts[values] = counts
    return stats


class ShardLog:
    """The journal of written shards: ``{"entry": manifest entry, "stats": ...}`` per line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self.lines[item["entry"]["path"]] = item
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # written by a process that was killed mid-line

    def reusable(self, task: ShardTask) -> dict | None:
        item = self.lines.get(task.relative)
        path = Path(task.dataset_dir) / task.relative
        if item is None or item["entry"]["records"] != task.records or not path.exists():
            return None
        return item if sha256_file(path) == item["entry"]["sha256"] else None

    def append(self, item: dict) -> None:
        # No fsync: the shard is durable (write_shard); a lost line only means a rewrite.
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(item, sort_keys=True) + "\n")
        self.lines[item["entry"]["path"]] = item
