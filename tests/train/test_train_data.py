"""Training examples and loaders: crops, packed windows, resumable and distributed batching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from train_helpers import shared_dataset

from wensu.alphabet import get_alphabet
from wensu.data.dataset import ShardedDataset
from wensu.train.datamodule import ProteinDataModule
from wensu.train.examples import CroppedRecords, PackedWindows

ALPHABET = get_alphabet()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return shared_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def records(dataset):
    return ShardedDataset(dataset, "train")


def test_crops_are_windows_of_the_record(records):
    crops = CroppedRecords(records, crop_length=64, seed=3)
    assert np.array_equal(crops.lengths, np.minimum(records.lengths, 62))
    long_index = int(np.argmax(records.lengths))
    residues = records[long_index]["sequence"]
    starts = set()
    for epoch in range(6):
        example = crops[(epoch, 0, long_index)]
        tokens = example["tokens"]
        assert (
            tokens.size == 64 and tokens[0] == ALPHABET.cls_idx and tokens[-1] == ALPHABET.eos_idx
        )
        body = ALPHABET.decode(tokens)
        start = residues.find(body)
        assert start == crops.crop_start(epoch, long_index, len(residues))
        starts.add(start)
        # Same (seed, epoch, index): same crop, in any process.
        assert np.array_equal(crops[(epoch, 5, long_index)]["tokens"], tokens)
    assert len(starts) > 1
    short = int(np.argmin(records.lengths))
    assert np.array_equal(crops[(2, 0, short)]["tokens"], records[short]["tokens"])


@pytest.mark.parametrize("shuffle", [True, False])
def test_packed_windows_tile_the_concatenated_records(records, shuffle):
    windows = PackedWindows(records, window=500, seed=1, shuffle=shuffle)
    order, _ = windows.layout(2)
    stream = np.concatenate([records[int(i)]["tokens"] for i in order])
    assert windows.total_tokens == stream.size == int(windows.lengths.sum())
    pieces = [windows[(2, 0, w)] for w in range(len(windows))]
    assert np.array_equal(np.concatenate([p["tokens"] for p in pieces]), stream)
    assert all(p["tokens"].size == 500 for p in pieces[:-1])
    first_ids = [records[int(i)]["id"] for i in order[:3]]
    assert pieces[0]["ids"][: len(first_ids)] == first_ids[: len(pieces[0]["ids"])]
    if shuffle:
        assert not np.array_equal(windows.layout(3)[0], order)
    else:
        assert np.array_equal(order, np.arange(len(records)))


def _batches(loader, limit=None):
    out = []
    for batch in loader:
        out.append(batch)
        if limit is not None and len(out) == limit:
            break
    return out


def test_resume_continues_after_the_consumed_batch(dataset):
    def loader_after(consumed_state=None):
        module = ProteinDataModule(dataset, max_tokens=2048, crop_length=128, num_workers=0)
        if consumed_state is not None:
            module.load_state_dict(consumed_state)
        return module, module.train_dataloader()

    module, loader = loader_after()
    loader.batch_sampler.set_epoch(1)
    full = _batches(loader)
    assert [b["batch_index"] for b in full] == list(range(len(full)))
    assert {b["epoch"] for b in full} == {1}
    # Train on 4 batches while the loader runs ahead, then checkpoint.
    module, loader = loader_after()
    loader.batch_sampler.set_epoch(1)
    iterator = iter(loader)
    taken = [next(iterator) for _ in range(6)]
    for batch in taken[:4]:
        module.trainer = SimpleNamespace(training=True)
        module.on_before_batch_transfer(batch, 0)
    state = module.state_dict()
    assert state["train_sampler"] == {"epoch": 1, "seed": 0, "consumed": 4}
    assert loader.state_dict() == state["train_sampler"]
    _, resumed = loader_after(state)
    rest = _batches(resumed)
    assert [b["ids"] for b in rest] == [b["ids"] for b in full[4:]]
    assert [b["batch_index"] for b in rest] == list(range(4, len(full)))
    assert all(
        np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(rest, full[4:], strict=True)
    )


def test_ranks_get_disjoint_batches_covering_the_split(dataset):
    seen = []
    for rank in (0, 1):
        module = ProteinDataModule(dataset, max_tokens=2048, crop_length=128, num_workers=0)
        module.trainer = SimpleNamespace(global_rank=rank, world_size=2, training=False)
        seen.append([i for b in module.train_dataloader() for i in b["ids"]])
    assert len(seen[0]) and len(seen[1])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(ShardedDataset(dataset, "train").ids)


def test_workers_produce_the_same_batches(dataset):
    def run(workers):
        module = ProteinDataModule(
            dataset, max_tokens=2048, crop_length=96, num_workers=workers, concatenate=True
        )
        loader = module.train_dataloader()
        loader.batch_sampler.set_epoch(2)
        return _batches(loader, limit=5)

    inline, workers = run(0), run(1)
    assert [b["ids"] for b in inline] == [b["ids"] for b in workers]
    assert all(
        np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(inline, workers, strict=True)
    )
    assert {b["tokens"].shape[1] for b in inline} == {96}


def test_budget_smaller_than_crop_is_refused(dataset):
    with pytest.raises(ValueError, match="data.max_tokens"):
        ProteinDataModule(dataset, max_tokens=100, crop_length=128)


def test_validation_examples_do_not_change_with_the_epoch(dataset):
    module = ProteinDataModule(dataset, max_tokens=2048, crop_length=64, num_workers=0)
    loader = module.val_dataloader()
    loader.batch_sampler.set_epoch(0)
    first = _batches(loader)
    loader.batch_sampler.set_epoch(5)
    later = _batches(loader)
    assert [b["ids"] for b in first] == [b["ids"] for b in later]
    assert all(np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(first, later, strict=True))
