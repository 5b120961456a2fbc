"""wensu.embeddings: the reader API over the HDF5 layout, and the reversible id encoding."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from wensu.embed.writer import write_group
from wensu.embeddings import (
    EmbeddingsFileError,
    decode_id,
    encode_id,
    file_info,
    iter_embeddings,
    load_matrix,
    read,
)

IDS = ["sp|P0A7V8|RS4_ECOLI", "weird/id with%percent", ".", "tab\tand\x7fdel", "ünïcode"]
D_MODEL, NUM_LAYERS = 4, 3


def _embedding(rng: np.random.Generator, length: int) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for layer in (1, NUM_LAYERS):
        per_residue = rng.normal(size=(length, D_MODEL)).astype(np.float32)
        out[layer] = {
            "mean": per_residue.mean(0),
            "per_residue": per_residue,
            "cls": rng.normal(size=D_MODEL).astype(np.float32),
        }
    return out


@pytest.fixture()
def written(tmp_path):
    """A file with known arrays, plus those arrays."""
    rng = np.random.default_rng(0)
    path = tmp_path / "emb.h5"
    expected = {rid: _embedding(rng, 3 + i) for i, rid in enumerate(IDS)}
    with h5py.File(path, "w") as handle:
        handle.attrs["layers"] = np.array([1, NUM_LAYERS])
        handle.attrs["pooling"] = ["mean", "per_residue", "cls"]
        handle.attrs["num_layers"] = NUM_LAYERS
        handle.attrs["model_config"] = json.dumps({"num_layers": NUM_LAYERS})
        for rid, emb in expected.items():
            write_group(handle, rid, len(emb[1]["per_residue"]), emb, "float32")
        partial = handle.create_group(encode_id("half_written"))
        partial.attrs["id"] = "half_written"
        partial.create_group("layer_3").create_dataset("mean", data=np.zeros(D_MODEL))
    return path, expected


@pytest.mark.parametrize("record_id", [*IDS, "%2F", "a%", "..", "/", ""])
def test_id_encoding_is_reversible_and_hdf5_safe(record_id):
    name = encode_id(record_id)
    assert decode_id(name) == record_id
    assert "/" not in name and name not in (".", "..")


def test_read_returns_exact_arrays_and_skips_incomplete_groups(written):
    path, expected = written
    for kind in ("mean", "per_residue", "cls"):
        got = read(path, layer=-1, kind=kind)
        assert sorted(got) == sorted(IDS)
        for rid in IDS:
            np.testing.assert_array_equal(got[rid], expected[rid][NUM_LAYERS][kind])
    first_layer = read(path, layer=1, kind="mean")
    np.testing.assert_array_equal(first_layer[IDS[0]], expected[IDS[0]][1]["mean"])
    # -4 wraps to layer 0 of a 3-layer model, which is not stored
    with pytest.raises(EmbeddingsFileError, match="layer -4 .*not stored"):
        read(path, layer=-4)


def test_iter_embeddings_streams_in_file_order(written):
    path, expected = written
    pairs = list(iter_embeddings(path, layer=3, kind="cls"))
    with h5py.File(path) as handle:
        order = [handle[name].attrs["id"] for name in handle if handle[name].attrs.get("complete")]
    assert [rid for rid, _ in pairs] == order
    for rid, vector in pairs:
        np.testing.assert_array_equal(vector, expected[rid][3]["cls"])


def test_load_matrix_rows_match_ids(written):
    path, expected = written
    ids, matrix = load_matrix(path, kind="mean")
    assert matrix.shape == (len(IDS), D_MODEL) and matrix.dtype == np.float32
    for row, rid in enumerate(ids):
        np.testing.assert_array_equal(matrix[row], expected[rid][NUM_LAYERS]["mean"])
    with pytest.raises(EmbeddingsFileError, match="one vector per sequence"):
        load_matrix(path, kind="per_residue")


def test_group_attributes_and_file_info(written):
    path, expected = written
    with h5py.File(path) as handle:
        group = handle[encode_id(IDS[1])]
        assert group.attrs["id"] == IDS[1]
        assert group.attrs["length"] == len(expected[IDS[1]][1]["per_residue"])
        assert bool(group.attrs["complete"])
    info = file_info(path)
    assert info["layers"] == [1, NUM_LAYERS]
    assert info["pooling"] == ["mean", "per_residue", "cls"]
    assert info["model_config"] == {"num_layers": NUM_LAYERS}


def test_clear_errors(tmp_path, written):
    path, _ = written
    with pytest.raises(EmbeddingsFileError, match="not found"):
        read(tmp_path / "missing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(EmbeddingsFileError, match="garbage.h5.*not a readable HDF5"):
        read(garbage)
    with pytest.raises(EmbeddingsFileError, match="kind must be one of"):
        read(path, kind="max")
    with h5py.File(path, "a") as handle:
        handle.attrs["pooling"] = ["mean"]
    with pytest.raises(EmbeddingsFileError, match="kind 'cls' not stored"):
        read(path, kind="cls")
