"""preprocessing.sharding: exact shard cuts across batches, the background shard writer."""

from __future__ import annotations

import json

import h5py
import pytest
from wensu.preprocessing.sharding import ShardCommitter, ShardJournal, SplitWriter

from wensu.data.shards import sha256_file, write_shard


def _records(count: int) -> tuple[list[str], list[bytes], list[int]]:
    ids = [f"r{i}" for i in range(count)]
    sequences = [b"ACDEFGHIKL"[: i % 10 + 1] * (i % 3 + 1) for i in range(count)]
    return ids, sequences, [i % 5 - 1 for i in range(count)]


def test_batches_are_cut_into_exact_shards_identical_to_write_shard(tmp_path):
    ids, sequences, taxa = _records(23)
    journal = ShardJournal(tmp_path / "journal.jsonl")
    written = []
    with ShardCommitter() as committer:
        writer = SplitWriter(
            tmp_path / "out", "valid", 5, journal, committer=committer,
            with_clusters=False, source="test", on_write=written.append,
        )  # fmt: skip
        for start, end in [(0, 3), (3, 4), (4, 17), (17, 23)]:  # batches across shard edges
            writer.add_many(ids[start:end], sequences[start:end], None, taxa[start:end])
        writer.flush()
    summary = writer.summary()
    assert [s["records"] for s in summary["shards"]] == [5, 5, 5, 5, 3]
    assert summary["records"] == 23 and summary["residues"] == sum(map(len, sequences))
    assert [e["path"] for e in written] == [f"valid/shard-0000{k}.h5" for k in range(5)]
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == summary["shards"]
    for k, shard in enumerate(summary["shards"]):
        path = tmp_path / "out" / shard["path"]
        assert sha256_file(path) == shard["sha256"]
        reference = tmp_path / "ref" / "valid" / path.name
        rows = slice(5 * k, 5 * k + 5)
        write_shard(reference, ids[rows], sequences[rows], taxa=taxa[rows],
                    attrs={"split": "valid", "source": "test"})  # fmt: skip
        assert path.read_bytes() == reference.read_bytes()
        with h5py.File(path, "r") as h5:
            assert [i.decode() for i in h5["ids"][:]] == ids[rows]
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_a_failed_shard_write_is_raised_to_the_caller(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train").write_text("a file where the split directory should be")
    journal = ShardJournal(tmp_path / "journal.jsonl")
    ids, sequences, taxa = _records(4)
    with pytest.raises(OSError), ShardCommitter() as committer:
        writer = SplitWriter(tmp_path / "out", "train", 2, journal, committer=committer,
                             with_clusters=False, source="test")  # fmt: skip
        writer.add_many(ids, sequences, None, taxa)
        writer.flush()
    assert not (tmp_path / "journal.jsonl").exists()
