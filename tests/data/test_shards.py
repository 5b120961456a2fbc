"""Shard and manifest files: exact contents, determinism, atomicity, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import require_shared

from wensu.data import shards
from wensu.data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    DatasetIntegrityError,
    ManifestError,
    read_manifest,
    sha256_file,
    shard_name,
    write_manifest,
    write_shard,
)

UNIPARC = "sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta"


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


@pytest.fixture(scope="module")
def records() -> tuple[list[str], list[bytes]]:
    return read_fasta(require_shared(UNIPARC), 120)


def test_constants_and_shard_name():
    assert FORMAT_VERSION == 1
    assert SPLITS == ("train", "valid", "test")
    assert MANIFEST_NAME == "manifest.json"
    assert shard_name(0) == "shard-00000.h5"
    assert shard_name(12345) == "shard-12345.h5"
    with pytest.raises(ValueError):
        shard_name(-1)


def test_write_shard_stores_exact_layout(tmp_path, records):
    ids, seqs = records
    clusters = [ids[i - i % 3] for i in range(len(ids))]
    taxa = [9606 if i % 2 else -1 for i in range(len(ids))]
    path = tmp_path / "ds" / "train" / shard_name(0)
    info = write_shard(path, ids, seqs, clusters=clusters, taxa=taxa, attrs={"source": "uniparc"})

    assert info == {
        "path": "train/shard-00000.h5",
        "records": len(ids),
        "residues": sum(len(s) for s in seqs),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert sha256_file(path) == info["sha256"]
    with h5py.File(path, "r") as h5:
        assert h5["residues"].dtype == np.uint8
        assert h5["residues"][:].tobytes() == b"".join(seqs)
        offsets = h5["offsets"][:]
        assert offsets.dtype == np.int64
        assert offsets[0] == 0 and offsets.size == len(ids) + 1
        assert np.array_equal(np.diff(offsets), [len(s) for s in seqs])
        assert [x.decode() for x in h5["ids"][:]] == ids
        assert [x.decode() for x in h5["cluster"][:]] == clusters
        assert h5["taxon"][:].tolist() == taxa
        assert h5.attrs["format_version"] == 1
        assert h5.attrs["split"] == "train"
        assert h5.attrs["source"] == "uniparc"
    assert list((tmp_path / "ds" / "train").iterdir()) == [path]


def test_write_shard_is_byte_deterministic(tmp_path, records):
    ids, seqs = records
    a = write_shard(tmp_path / "a" / "valid" / shard_name(3), ids, seqs, attrs={"source": "x"})
    b = write_shard(tmp_path / "b" / "valid" / shard_name(3), ids, seqs, attrs={"source": "x"})
    assert a == b
    assert a["path"] == "valid/shard-00003.h5"


def test_write_shard_empty_and_optional_columns_absent(tmp_path):
    path = tmp_path / "test" / shard_name(0)
    info = write_shard(path, [], [])
    assert info["records"] == 0 and info["residues"] == 0
    with h5py.File(path, "r") as h5:
        assert h5["offsets"][:].tolist() == [0]
        assert "cluster" not in h5 and "taxon" not in h5


def test_write_shard_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2 entries but there are 1 ids"):
        write_shard(tmp_path / "train" / shard_name(0), ["a"], [b"MK", b"LL"])
    with pytest.raises(ValueError, match="2 entries but there are 1 ids"):
        write_shard(tmp_path / "train" / shard_name(0), ["a"], [b"MK"], taxa=[1, 2])
    with pytest.raises(ValueError, match="'a'.*upper-case"):
        write_shard(tmp_path / "train" / shard_name(0), ["a"], [b"mk"])
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("fail_at", ["ids", "fsync"])
def test_interrupted_write_keeps_old_shard_and_leaves_no_tmp(
    tmp_path, records, monkeypatch, fail_at
):
    ids, seqs = records
    path = tmp_path / "train" / shard_name(0)
    old = write_shard(path, ids[:5], seqs[:5])

    if fail_at == "ids":
        real = h5py.Group.create_dataset

        def create_dataset(self, name, *args, **kwargs):
            if name == "ids":
                raise OSError("disk full")
            return real(self, name, *args, **kwargs)

        monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    else:

        def broken_fsync(_path):
            raise OSError("disk full")

        monkeypatch.setattr(shards, "fsync_file", broken_fsync)

    with pytest.raises(OSError, match="disk full"):
        write_shard(path, ids, seqs)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert sha256_file(path) == old["sha256"]


def test_manifest_round_trip_sorted_and_atomic(tmp_path, monkeypatch):
    manifest = {"splits": {"train": {"records": 1}}, "format_version": 1, "kind": "proteins"}
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / MANIFEST_NAME
    assert path.read_text() == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert read_manifest(tmp_path) == manifest

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_manifest(tmp_path, {"format_version": 1, "kind": "other"})
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]
    assert read_manifest(tmp_path) == manifest


def test_read_manifest_errors_name_the_file(tmp_path):
    path = tmp_path / MANIFEST_NAME
    with pytest.raises(ManifestError, match=f"{path}: manifest not found"):
        read_manifest(tmp_path)
    path.write_text('{"format_version": 1, "splits": ')
    with pytest.raises(ManifestError, match=f"{path}: manifest is not valid JSON"):
        read_manifest(tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="must be a JSON object, got list"):
        read_manifest(tmp_path)
    path.write_text('{"format_version": 7}')
    with pytest.raises(ManifestError, match="format_version 7 is not supported"):
        read_manifest(tmp_path)
    assert issubclass(ManifestError, DatasetIntegrityError)
    assert issubclass(DatasetIntegrityError, ValueError)
