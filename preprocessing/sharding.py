"""Shard writing with a journal, so a rerun keeps every shard that was completely written.

Records reach a :class:`SplitWriter` in input order and are cut into shards of exactly
``shard_size_records`` (the last one smaller): shard k of a split always holds the same
records, so its bytes (and SHA-256) do not depend on when or how often the run was started.
A shard enters the journal only after ``write_shard`` renamed it into place; a rerun reuses a
journaled shard whose file still has the journaled SHA-256 and rewrites any other.

``write_shard`` runs beside the pipeline (:class:`ShardCommitter`), one shard at a time, so the
fsync that makes each shard durable overlaps with parsing the next records instead of stalling
them; the next shard starts only after the previous one is renamed and journaled, so a kill
leaves at most one ``.tmp`` file behind, which a rerun removes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from wensu.data.shards import sha256_file, shard_name, write_shard

from .stats import SequenceStats


class ShardJournal:
    """Append-only JSON-lines record of completed shards (a torn last line is ignored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # written by a process that was killed mid-line
                self.entries[entry["path"]] = entry

    def reusable(self, dataset_dir: Path, relative: str, records: int) -> dict | None:
        """The journaled entry if its file is intact (same SHA-256 and record count)."""
        entry = self.entries.get(relative)
        path = Path(dataset_dir) / relative
        if entry is None or entry["records"] != records or not path.exists():
            return None
        return entry if sha256_file(path) == entry["sha256"] else None


def append_entry(journal: Path, entry: dict) -> None:
    """Append one completed shard's entry to the journal file."""
    # No fsync: the shard itself is durable (write_shard), and a journal line lost to a
    # power cut only means that shard is written again, to the same bytes.
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def write_journaled_shard(
    journal: Path, path: Path, ids: list[str], sequences: list[bytes], **kwargs
) -> tuple[dict, SequenceStats]:
    """``write_shard(path, ids, sequences, **kwargs)``, then its entry appended to the
    ``journal`` file (so a kill after this returns never makes a rerun rewrite the shard);
    also the statistics of the shard's sequences, computed here to spare the caller."""
    entry = write_shard(path, ids, sequences, **kwargs)
    append_entry(journal, entry)
    stats = SequenceStats()
    stats.add_many(sequences)
    return entry, stats


class ShardCommitter:
    """Runs one shard write at a time on a background thread; its result is handled on the
    caller's thread at the next :meth:`submit` or :meth:`wait` (errors are raised there).

    The fsync, hashing and statistics of a shard (which release the GIL) overlap with the
    caller's parsing and merging. A forked writer process was measured slower: sending the
    records to it costs more than the HDF5 encoding it would take off the caller.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="wensu-shard-writer")
        self._pending: tuple[Future, Callable] | None = None

    def submit(self, done: Callable[[dict, SequenceStats], None], /, *args, **kwargs) -> None:
        """Once the previous write is done and handled, start
        ``write_journaled_shard(*args, **kwargs)``; ``done(entry, stats)`` runs here when it is
        over."""
        self.wait()
        self._pending = (self._executor.submit(write_journaled_shard, *args, **kwargs), done)

    def wait(self) -> None:
        """Block until the running write is done and handle its result (or raise its error)."""
        if self._pending is not None:
            future, done = self._pending
            self._pending = None
            done(*future.result())

    def __enter__(self) -> ShardCommitter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._pending is not None:  # already failing: let the write end, keep the error
                self._pending[0].exception()
        finally:
            self._executor.shutdown(wait=True)


class SplitWriter:
    """Buffers one split's records and writes (or reuses) its shards."""

    def __init__(
        self,
        dataset_dir: Path,
        split: str,
        shard_size: int,
        journal: ShardJournal,
        *,
        committer: ShardCommitter,
        with_clusters: bool,
        source: str,
        on_write: Callable[[dict], None] | None = None,
    ):
        self.dataset_dir, self.split, self.shard_size = Path(dataset_dir), split, shard_size
        self.journal, self.on_write, self.committer = journal, on_write, committer
        self.attrs = {"split": split, "source": source}
        self.with_clusters = with_clusters
        self.shards: list[dict] = []
        self.stats = SequenceStats()
        self.reused = 0
        self.ids: list[str] = []
        self.sequences: list[bytes] = []
        self.clusters: list[str] = []
        self.taxa: list[int] = []

    def add_many(
        self,
        ids: list[str],
        sequences: list[bytes],
        clusters: list[str] | None,
        taxa: list[int],
    ) -> None:
        """Buffer records (in input order); every full ``shard_size`` becomes a shard."""
        self.ids.extend(ids)
        self.sequences.extend(sequences)
        self.clusters.extend(clusters if clusters is not None else [""] * len(ids))
        self.taxa.extend(taxa)
        start = 0
        while len(self.ids) - start >= self.shard_size:
            self._write(start, start + self.shard_size)
            start += self.shard_size
        if start:  # once per call, so a small shard_size does not make this quadratic
            del self.ids[:start], self.sequences[:start], self.clusters[:start], self.taxa[:start]

    def flush(self) -> None:
        """Write the buffered records as the next shard (no-op when empty)."""
        if self.ids:
            self._write(0, len(self.ids))
            self.ids, self.sequences, self.clusters, self.taxa = [], [], [], []

    def _write(self, start: int, end: int) -> None:
        ids, sequences = self.ids[start:end], self.sequences[start:end]
        clusters, taxa = self.clusters[start:end], self.taxa[start:end]
        relative = f"{self.split}/{shard_name(len(self.shards))}"
        self.committer.wait()  # journal entries are added by wait(), so it is up to date
        entry = self.journal.reusable(self.dataset_dir, relative, len(ids))
        if entry is not None:
            self.reused += 1
            self.shards.append(entry)
            self.stats.add_many(sequences)
            return
        entry: dict = {}
        self.shards.append(entry)  # filled in when the write is done

        def done(written: dict, stats: SequenceStats) -> None:
            entry.update(written)
            self.stats = self.stats.merge(stats)
            self.journal.entries[relative] = entry  # the file line is already written
            if self.on_write is not None:
                self.on_write(entry)

        clusters = clusters if self.with_clusters else None
        target = self.dataset_dir / relative
        self.committer.submit(
            done,
            self.journal.path,
            target,
            ids,
            sequences,
            clusters=clusters,
            taxa=taxa,
            attrs=self.attrs,
        )

    def summary(self) -> dict:
        """The manifest's entry for this split (after ``flush`` and ``committer.wait()``)."""
        return {
            "records": sum(s["records"] for s in self.shards),
            "residues": sum(s["residues"] for s in self.shards),
            "shards": list(self.shards),
        }
