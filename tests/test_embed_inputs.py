"""wensu.embed: accepted checkpoints (ESM-2 Hugging Face folder), quarantine of bad or
duplicate records, clear errors, per-sequence files and float16 output."""

from __future__ import annotations

import h5py
import helpers_embed
import numpy as np
import pytest
import torch
from helpers_embed import ALL_KINDS, direct, tiny_encoder

from wensu.embed import EmbedError, embed
from wensu.embeddings import encode_id, read
from wensu.interop import save_hf

# The shared fixtures (a plain assignment, so pytest sees them here).
records, fasta = helpers_embed.records, helpers_embed.fasta


def test_esm2_hugging_face_folder_is_accepted(tmp_path, fasta, records):
    encoder = tiny_encoder()
    folder = save_hf(encoder, tmp_path / "esm2_tiny")
    summary = embed(folder, fasta, tmp_path / "e.h5", progress=False)
    assert summary.written == len(records)
    means = read(tmp_path / "e.h5")
    for rid, seq in records[:3]:
        np.testing.assert_allclose(means[rid], direct(encoder, seq)[2].mean(0), atol=1e-5)
    with h5py.File(tmp_path / "e.h5") as handle:
        assert handle.attrs["checkpoint"] == str(folder.resolve())


def test_quarantine_duplicates_and_ids(tmp_path, records):
    encoder = tiny_encoder()
    rows = [*records[:2], ("bad_chars", "MKJQ"), ("my/odd%id", records[2][1]), ("empty", "")]
    path = tmp_path / "p.fa"
    path.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in rows))
    summary = embed(encoder, path, tmp_path / "e.h5", progress=False)
    assert (summary.written, summary.quarantined) == (3, 2)
    lines = (tmp_path / "e.h5.quarantine.tsv").read_text().splitlines()
    assert lines[0] == "id\treason\tdetail" and [ln.split("\t")[0] for ln in lines[1:]] == [
        "bad_chars",
        "empty",
    ]
    assert "invalid_characters" in lines[1] and "J" in lines[1]
    with h5py.File(tmp_path / "e.h5") as handle:
        assert handle[encode_id("my/odd%id")].attrs["id"] == "my/odd%id"
    np.testing.assert_allclose(
        read(tmp_path / "e.h5")["my/odd%id"], direct(encoder, records[2][1])[2].mean(0), atol=1e-5
    )

    dup = tmp_path / "dup.fa"
    dup.write_text(
        "".join(f">{rid}\n{seq}\n" for rid, seq in [*records[:3], records[1], records[2]])
    )
    with pytest.raises(EmbedError, match=rf"2 duplicate id\(s\): {records[1][0]}, {records[2][0]}"):
        embed(encoder, dup, tmp_path / "d.h5", progress=False)
    summary = embed(encoder, dup, tmp_path / "d.h5", dedup=True, progress=False)
    assert (summary.written, summary.duplicates) == (3, 2)


def test_bad_inputs_give_clear_errors(tmp_path, fasta):
    encoder = tiny_encoder()
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(EmbedError, match="empty.fa: no FASTA records"):
        embed(encoder, empty, tmp_path / "e.h5", progress=False)
    with pytest.raises(EmbedError, match="missing.fa: no such file"):
        embed(encoder, tmp_path / "missing.fa", tmp_path / "e.h5", progress=False)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(EmbedError, match="garbage.ckpt"):
        embed(garbage, fasta, tmp_path / "e.h5", progress=False)
    with pytest.raises(EmbedError, match="nope.ckpt: no such file"):
        embed(tmp_path / "nope.ckpt", fasta, tmp_path / "e.h5", progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(EmbedError, match="cannot write output .*a_file/e.h5"):
        embed(encoder, fasta, blocker / "e.h5", progress=False)
    with pytest.raises(EmbedError, match="layer 5 out of range"):
        embed(encoder, fasta, tmp_path / "e.h5", layers=[5], progress=False)
    with pytest.raises(EmbedError, match="pooling must be"):
        embed(encoder, fasta, tmp_path / "e.h5", pooling=["max"], progress=False)


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_per_sequence_files_like_fair_esm(tmp_path, fasta, records, fmt):
    encoder = tiny_encoder()
    out = tmp_path / "emb"
    embed(encoder, fasta, out, format=fmt, layers=[0, -1], pooling=ALL_KINDS, progress=False)
    for rid, seq in records:
        path = out / f"{encode_id(rid)}.{fmt}"
        if fmt == "pt":
            data = torch.load(path, weights_only=True)
            assert data["label"] == rid
            arrays = {
                f"{k}/{layer}": v.numpy()
                for k in data
                if k != "label"
                for layer, v in data[k].items()
            }
        else:
            data = np.load(path)
            assert str(data["label"]) == rid
            arrays = {k: data[k] for k in data.files if k != "label"}

        def get(key, layer, arrays=arrays):
            return arrays[f"{key}/{layer}"]

        reference = direct(encoder, seq)
        for layer in (0, 2):
            np.testing.assert_allclose(get("representations", layer), reference[layer], atol=1e-5)
            np.testing.assert_allclose(
                get("mean_representations", layer), reference[layer].mean(0), atol=1e-5
            )
            assert get("bos_representations", layer).shape == (32,)
    summary = embed(
        encoder, fasta, out, format=fmt, layers=[0, -1], pooling=ALL_KINDS, progress=False
    )
    assert (summary.written, summary.skipped) == (0, len(records))


def test_float16_per_residue(tmp_path, fasta, records):
    encoder = tiny_encoder()
    embed(
        encoder,
        fasta,
        tmp_path / "e.h5",
        pooling=ALL_KINDS,
        per_residue_dtype="float16",
        progress=False,
    )
    per_residue = read(tmp_path / "e.h5", kind="per_residue")
    assert per_residue[records[0][0]].dtype == np.float16
    assert read(tmp_path / "e.h5")[records[0][0]].dtype == np.float32
    np.testing.assert_allclose(
        per_residue[records[0][0]], direct(encoder, records[0][1])[2], atol=2e-3, rtol=2e-3
    )
