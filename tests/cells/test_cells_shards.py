"""Cell shards: write/read round trip, checksums, collate."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from wensu.preprocessing.cells.vocab import GeneVocab

from wensu.data.cells import CellShardDataset, collate_cells, write_cell_shard
from wensu.data.shards import DatasetIntegrityError, ManifestError, write_manifest

CELLS = [
    ("c1", [5, 7, 9], [1, 8, 3], "B", "1015"),
    ("c2", [6], [2], "", ""),
    ("c3", [5, 6, 7, 8, 9], [4, 4, 5, 6, 1], "NK", "101"),
]


def _dataset(tmp_path, cells=CELLS):
    vocab = GeneVocab(["A", "B", "C", "D", "E"])
    vocab.save(tmp_path / "vocab.json")
    entry = write_cell_shard(
        tmp_path / "train" / "shard-00000.h5",
        ids=[c[0] for c in cells],
        datasets=["toy"] * len(cells),
        genes=[np.array(c[1]) for c in cells],
        bins=[np.array(c[2]) for c in cells],
        labels={"cell_type_coarse": [c[3] for c in cells]},
        donors=[c[4] for c in cells],
        attrs={"source": "toy"},
    )
    manifest = {
        "format_version": 1,
        "kind": "cells",
        "vocab": "vocab.json",
        "label_columns": ["cell_type_coarse"],
        "splits": {"train": {"records": len(cells), "tokens": entry["tokens"], "shards": [entry]}},
    }
    write_manifest(tmp_path, manifest)
    return entry


def test_round_trip(tmp_path):
    entry = _dataset(tmp_path)
    assert (
        entry["path"] == "train/shard-00000.h5" and entry["records"] == 3 and entry["tokens"] == 9
    )
    ds = CellShardDataset(tmp_path, "train")
    assert len(ds) == 3 and ds.lengths.tolist() == [3, 1, 5]
    for i, (cell_id, genes, bins, label, donor) in enumerate(CELLS):
        item = ds[i]
        assert item["id"] == cell_id and item["dataset"] == "toy" and item["donor"] == donor
        assert item["genes"].tolist() == genes and item["bins"].tolist() == bins
        assert item["labels"] == {"cell_type_coarse": label}
    assert ds[-1]["id"] == "c3"
    assert ds.column("cell_type_coarse").tolist() == ["B", "", "NK"]
    assert ds.vocab.symbols(ds[0]["genes"]) == ["A", "C", "E"]
    with h5py.File(tmp_path / entry["path"]) as h5:
        assert h5["genes"].dtype == np.int32 and h5["bins"].dtype == np.uint8
        assert h5.attrs["kind"] == "cells" and h5.attrs["split"] == "train"
        np.testing.assert_array_equal(h5["offsets"][:], [0, 3, 4, 9])
    with pytest.raises(IndexError):
        ds[3]


def test_bytes_are_deterministic(tmp_path):
    first = _dataset(tmp_path / "a")
    second = _dataset(tmp_path / "b")
    assert first["sha256"] == second["sha256"]


def test_corrupted_shard_and_wrong_kind_are_named(tmp_path):
    entry = _dataset(tmp_path)
    path = tmp_path / entry["path"]
    with h5py.File(path, "a") as h5:
        h5["bins"][0] = 7
    with pytest.raises(DatasetIntegrityError, match="checksum mismatch") as info:
        CellShardDataset(tmp_path, "train")
    assert str(path) in str(info.value)
    lazy = CellShardDataset(tmp_path, "train", verify="lazy")
    with pytest.raises(DatasetIntegrityError):
        lazy[0]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["kind"] = "proteins"
    write_manifest(tmp_path, manifest)
    with pytest.raises(ManifestError, match="not 'cells'"):
        CellShardDataset(tmp_path, "train", verify="none")


def test_collate_adds_cls_and_pads(tmp_path):
    _dataset(tmp_path)
    ds = CellShardDataset(tmp_path, "train")
    batch = collate_cells([ds[0], ds[1]])
    assert batch["genes"].tolist() == [[0, 5, 7, 9], [0, 6, 1, 1]]
    assert batch["bins"].tolist() == [[0, 1, 8, 3], [0, 2, 0, 0]]
    assert batch["lengths"].tolist() == [4, 2] and batch["ids"] == ["c1", "c2"]
    short = collate_cells([ds[2]], max_tokens=3)
    assert short["genes"].tolist() == [[0, 5, 6]]


def test_writer_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="as many bins as gene ids"):
        write_cell_shard(
            tmp_path / "train" / "shard-00000.h5",
            ids=["a"],
            datasets=["d"],
            genes=[np.array([5, 6])],
            bins=[np.array([1])],
            labels={},
            donors=[""],
        )
    assert not list((tmp_path / "train").glob("*"))
