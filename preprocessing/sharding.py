"""Shard writing with a journal, so a rerun keeps every shard that was completely written.

Records reach a :class:`SplitWriter` in input order and are cut into shards of exactly
``shard_size_records`` (the last one smaller): shard k of a split always holds the same
records, so its bytes (and SHA-256) do not depend on when or how often the run was started.
A shard enters the journal only after ``write_shard`` renamed it into place; a rerun reuses a
journaled shard whose file still has the journaled SHA-256 and rewrites any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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

    def add(self, entry: dict) -> None:
        # No fsync: the shard itself is durable (write_shard), and a journal line lost to a
        # power cut only means that shard is written again, to the same bytes.
        self.entries[entry["path"]] = entry
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    def reusable(self, dataset_dir: Path, relative: str, records: int) -> dict | None:
        """The journaled entry if its file is intact (same SHA-256 and record count)."""
        entry = self.entries.get(relative)
        path = Path(dataset_dir) / relative
        if entry is None or entry["records"] != records or not path.exists():
            return None
        return entry if sha256_file(path) == entry["sha256"] else None


class SplitWriter:
    """Buffers one split's records and writes (or reuses) its shards."""

    def __init__(
        self,
        dataset_dir: Path,
        split: str,
        shard_size: int,
        journal: ShardJournal,
        *,
        with_clusters: bool,
        source: str,
        on_write: Callable[[dict], None] | None = None,
    ):
        self.dataset_dir, self.split, self.shard_size = Path(dataset_dir), split, shard_size
        self.journal, self.on_write = journal, on_write
        self.attrs = {"split": split, "source": source}
        self.with_clusters = with_clusters
        self.shards: list[dict] = []
        self.stats = SequenceStats()
        self.reused = 0
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.sequences: list[bytes] = []
        self.clusters: list[str] = []
        self.taxa: list[int] = []

    def add(self, record_id: str, sequence: bytes, cluster: str | None, taxon: int) -> None:
        self.ids.append(record_id)
        self.sequences.append(sequence)
        self.clusters.append(cluster or "")
        self.taxa.append(taxon)
        if len(self.ids) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as the next shard (no-op when empty)."""
        if not self.ids:
            return
        self.stats.add_many(self.sequences)
        relative = f"{self.split}/{shard_name(len(self.shards))}"
        entry = self.journal.reusable(self.dataset_dir, relative, len(self.ids))
        if entry is not None:
            self.reused += 1
        else:
            entry = write_shard(
                self.dataset_dir / relative,
                self.ids,
                self.sequences,
                clusters=self.clusters if self.with_clusters else None,
                taxa=self.taxa,
                attrs=self.attrs,
            )
            self.journal.add(entry)
            if self.on_write is not None:
                self.on_write(entry)
        self.shards.append(entry)
        self._reset()

    def summary(self) -> dict:
        """The manifest's entry for this split."""
        return {
            "records": sum(s["records"] for s in self.shards),
            "residues": sum(s["residues"] for s in self.shards),
            "shards": list(self.shards),
        }
