"""ShardedDataset over real UniParc records: round trip, integrity checks, workers, ranks."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import require_shared
from torch.utils.data import DataLoader

from wensu.alphabet import get_alphabet
from wensu.data.collate import collate_records, collate_tokens
from wensu.data.dataset import ShardedDataset
from wensu.data.sampler import TokenBudgetBatchSampler
from wensu.data.shards import (
    DatasetIntegrityError,
    ManifestError,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard,
)

UNIPARC = "sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta"
# Train shard sizes include an empty shard in the middle to exercise index mapping across it.
TRAIN_SHARD_SIZES = (70, 55, 0, 60, 55)


def read_fasta(path: Path, limit: int) -> tuple[list[str], list[bytes]]:
    ids: list[str] = []
    seqs: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            if len(ids) == limit:
                break
            ids.append(line[1:].split()[0])
            seqs.append([])
        elif line.strip():
            seqs[-1].append(line.strip())
    return ids, ["".join(s).encode("ascii") for s in seqs]


def build_dataset(root: Path, ids: list[str], seqs: list[bytes]) -> dict[str, list[int]]:
    """Write train/valid/test shards; returns the input record numbers of each split in order."""
    members: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for k in range(len(ids)):
        members["valid" if k % 10 == 8 else "test" if k % 10 == 9 else "train"].append(k)
    sizes = {
        "train": TRAIN_SHARD_SIZES,
        "valid": (len(members["valid"]),),
        "test": (len(members["test"]),),
    }
    splits = {}
    for split, chunk_sizes in sizes.items():
        assert sum(chunk_sizes) == len(members[split])
        entries, start = [], 0
        for i, size in enumerate(chunk_sizes):
            rows = members[split][start : start + size]
            start += size
            entries.append(
                write_shard(
                    root / split / shard_name(i),
                    [ids[r] for r in rows],
                    [seqs[r] for r in rows],
                    attrs={"source": UNIPARC},
                )
            )
        splits[split] = {
            "records": sum(e["records"] for e in entries),
            "residues": sum(e["residues"] for e in entries),
            "shards": entries,
        }
    write_manifest(root, {"format_version": 1, "kind": "proteins", "splits": splits})
    return members


@pytest.fixture(scope="module")
def records() -> tuple[list[str], list[bytes]]:
    return read_fasta(require_shared(UNIPARC), 300)


@pytest.fixture
def dataset_dir(tmp_path, records) -> tuple[Path, dict[str, list[int]]]:
    members = build_dataset(tmp_path / "ds", *records)
    return tmp_path / "ds", members


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def residue_byte_position(path: Path) -> int:
    with h5py.File(path, "r") as h5:
        return h5["residues"].id.get_offset() + 3


@pytest.mark.parametrize("verify", ["open", "lazy", "none"])
def test_round_trip_every_record(dataset_dir, records, verify):
    root, members = dataset_dir
    ids, seqs = records
    alphabet = get_alphabet()
    for split, rows in members.items():
        ds = ShardedDataset(root, split, verify=verify)
        assert len(ds) == len(rows)
        assert ds.ids == [ids[r] for r in rows]
        assert ds.lengths.dtype == np.int64
        assert ds.lengths.tolist() == [len(seqs[r]) for r in rows]
        for i, r in enumerate(rows):
            item = ds[i]
            assert item["id"] == ids[r]
            assert item["sequence"] == seqs[r].decode()
            assert item["tokens"].dtype == np.int64
            assert np.array_equal(item["tokens"], alphabet.encode(seqs[r].decode()))
        streamed = list(ds.iter_records())
        assert [x["id"] for x in streamed] == [ids[r] for r in rows]
        assert [x["sequence"] for x in streamed] == [seqs[r].decode() for r in rows]
        assert all(np.array_equal(a["tokens"], ds[i]["tokens"]) for i, a in enumerate(streamed))


def test_index_bounds(dataset_dir, records):
    root, members = dataset_dir
    ds = ShardedDataset(root, "train")
    assert ds[-1]["id"] == records[0][members["train"][-1]]
    assert ds[125]["id"] == records[0][members["train"][125]]  # first record after the empty shard
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_corrupted_shard_detected_on_open_and_lazily(dataset_dir):
    root, _ = dataset_dir
    bad = root / "train" / shard_name(3)
    expected = read_manifest(root)["splits"]["train"]["shards"][3]["sha256"]
    flip_byte(bad, residue_byte_position(bad))

    with pytest.raises(DatasetIntegrityError, match=f"{bad}: checksum mismatch") as err:
        ShardedDataset(root, "train", verify="open")
    assert expected in str(err.value)

    lazy = ShardedDataset(root, "train", verify="lazy")
    assert lazy[0]["id"]  # shard 0 is intact
    assert lazy.lengths.size == 240  # lengths read offsets only; no hash needed
    with pytest.raises(DatasetIntegrityError, match=f"{bad}: checksum mismatch"):
        lazy[125]  # first record of shard 3
    with pytest.raises(DatasetIntegrityError, match="checksum mismatch"):
        list(lazy.iter_records())

    unchecked = ShardedDataset(root, "train", verify="none")
    assert unchecked[125]["sequence"] != ShardedDataset(root, "valid")[0]["sequence"]


def test_missing_shard_and_manifest_problems(dataset_dir):
    root, _ = dataset_dir
    missing = root / "train" / shard_name(1)
    missing.unlink()
    with pytest.raises(
        DatasetIntegrityError, match=f"{missing}: shard listed in the manifest is missing"
    ):
        ShardedDataset(root, "train")
    lazy = ShardedDataset(root, "train", verify="none")
    assert lazy[0]["id"]
    with pytest.raises(DatasetIntegrityError, match="is missing"):
        lazy[70]

    with pytest.raises(ManifestError, match="split 'holdout' not in manifest"):
        ShardedDataset(root, "holdout")
    write_manifest(root, read_manifest(root) | {"kind": "cells"})
    with pytest.raises(ManifestError, match="dataset kind is 'cells', not 'proteins'"):
        ShardedDataset(root, "valid")
    with pytest.raises(ValueError, match="verify must be one of"):
        ShardedDataset(root, "valid", verify="always")
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json: manifest is not valid JSON"):
        ShardedDataset(root, "valid")
    (root / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="manifest not found"):
        ShardedDataset(root, "valid")


def test_manifest_record_count_disagreeing_with_shard(dataset_dir):
    root, _ = dataset_dir
    manifest = read_manifest(root)
    manifest["splits"]["valid"]["shards"][0]["records"] += 1
    write_manifest(root, manifest)
    shard = root / "valid" / shard_name(0)
    with pytest.raises(DatasetIntegrityError, match=f"{shard}: offsets hold 31 entries"):
        _ = ShardedDataset(root, "valid", verify="none").lengths


def test_pickle_after_use_reopens(dataset_dir):
    root, _ = dataset_dir
    ds = ShardedDataset(root, "train")
    before = [ds[i] for i in (0, 100, 200)]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    after = [clone[i] for i in (0, 100, 200)]
    assert [a["id"] for a in after] == [b["id"] for b in before]
    assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(after, before, strict=True))
    ds.close()
    assert ds[0]["id"] == before[0]["id"]


def test_two_ranks_two_forked_workers_cover_train_exactly_once(dataset_dir, records):
    root, members = dataset_dir
    ds = ShardedDataset(root, "train")
    assert ds[0]["id"]  # parent holds an open handle before the fork
    sequence_of = dict(zip(records[0], records[1], strict=True))
    seen: list[str] = []
    steps = []
    for rank in range(2):
        sampler = TokenBudgetBatchSampler(
            ds.lengths, max_tokens=4096, seed=11, num_replicas=2, rank=rank
        )
        sampler.set_epoch(1)
        loader = DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=2,
            collate_fn=collate_records,
            multiprocessing_context="fork",
        )
        batches = list(loader)
        steps.append(len(batches))
        assert len(batches) == len(sampler)
        expected = [[ds.ids[i] for i in b] for b in sampler.rank_batches()]
        assert [b["ids"] for b in batches] == expected
        for batch in batches:
            assert batch["tokens"].numel() <= 4096
            encoded = [get_alphabet().encode(sequence_of[i].decode()) for i in batch["ids"]]
            assert torch.equal(batch["tokens"], collate_tokens(encoded))
            seen.extend(batch["ids"])
    assert steps[0] == steps[1]
    assert sorted(seen) == sorted(records[0][r] for r in members["train"])
    assert len(seen) == len(set(seen))


def test_collate_records_values():
    alphabet = get_alphabet()
    recs = [{"id": s, "tokens": alphabet.encode(s)} for s in ("MKV", "A", "WWCCY")]
    batch = collate_records(recs)
    expected = torch.tensor(
        [[0, 20, 17, 7, 2, 1, 1], [0, 5, 2, 1, 1, 1, 1], [0, 22, 22, 23, 23, 19, 2]]
    )
    assert torch.equal(batch["tokens"], expected)
    assert batch["ids"] == ["MKV", "A", "WWCCY"]
    assert batch["lengths"].tolist() == [5, 3, 7]
    padded = collate_tokens([r["tokens"] for r in recs], pad_to_multiple=8)
    assert padded.shape == (3, 8) and torch.equal(padded[:, :7], expected)
    assert torch.all(padded[:, 7] == 1)
