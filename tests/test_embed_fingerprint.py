"""Embedding resume reuses only the same work: the id AND the sequence digest must match;
options beyond the trained context are refused unless asked for (and then recorded)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from helpers_embed import real_records, tiny_encoder, write_fasta

from wensu.checkpoint import lightning_checkpoint, save_atomic
from wensu.embed import embed
from wensu.embed.inputs import sequence_digest
from wensu.embed.settings import EmbedError
from wensu.embed.writer import DIGEST_JOURNAL, DIGEST_KEY


@pytest.fixture(scope="module")
def records():
    return real_records(6, max_length=200)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A wensu checkpoint trained (as its hyper-parameters say) at 254-residue crops."""
    encoder = tiny_encoder()
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    hyper = {"model": encoder.cfg.to_dict(), "max_length": 254}
    save_atomic(lightning_checkpoint(encoder, hyper), path)
    return path


def _changed(records, index=1, sequence="MKTAYIAKQRQISFVKSHFSRQ"):
    changed = list(records)
    changed[index] = (records[index][0], sequence)
    return changed


def test_h5_entries_carry_the_sequence_digest(tmp_path, records, checkpoint):
    out = tmp_path / "emb.h5"
    embed(checkpoint, write_fasta(tmp_path / "a.fasta", records), out, progress=False)
    with h5py.File(out, "r") as handle:
        stored = {handle[k].attrs["id"]: handle[k].attrs[DIGEST_KEY] for k in handle}
    assert stored == {rid: sequence_digest(seq.encode()) for rid, seq in records}


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_changed_sequence_under_an_embedded_id_is_refused(tmp_path, records, checkpoint, fmt):
    out = tmp_path / ("emb.h5" if fmt == "h5" else "emb")
    embed(checkpoint, write_fasta(tmp_path / "a.fasta", records), out, format=fmt, progress=False)
    before = out.read_bytes() if fmt == "h5" else sorted(p.name for p in out.iterdir())
    changed = write_fasta(tmp_path / "b.fasta", _changed(records))
    with pytest.raises(EmbedError) as caught:
        embed(checkpoint, changed, out, format=fmt, progress=False)
    message = str(caught.value)
    assert f"record {records[1][0]!r}" in message and "different sequence" in message
    assert "never reused" in message and "\n" not in message
    if fmt == "h5":
        assert "stored length" in message and out.read_bytes() == before
    else:
        assert sorted(p.name for p in out.iterdir()) == before
        assert len((out / DIGEST_JOURNAL).read_text().splitlines()) == len(records)
    # The unchanged input still resumes as "all done".
    summary = embed(checkpoint, tmp_path / "a.fasta", out, format=fmt, progress=False)
    assert (summary.written, summary.skipped) == (0, len(records))


def test_entry_without_digest_is_not_trusted(tmp_path, records, checkpoint):
    out = tmp_path / "emb.h5"
    fasta = write_fasta(tmp_path / "a.fasta", records)
    embed(checkpoint, fasta, out, progress=False)
    with h5py.File(out, "a") as handle:  # as an older wensu-embed wrote it
        for name in handle:
            del handle[name].attrs[DIGEST_KEY]
    with pytest.raises(EmbedError, match="has no sequence digest"):
        embed(checkpoint, fasta, out, progress=False)


def test_window_beyond_the_trained_context_is_refused_unless_asked(tmp_path, records, checkpoint):
    fasta = write_fasta(tmp_path / "a.fasta", records)
    with pytest.raises(EmbedError, match=r"window=5000 is longer than the 254 residues"):
        embed(checkpoint, fasta, tmp_path / "x.h5", window=5000, progress=False)
    with pytest.raises(EmbedError, match=r"max_length=600 is longer than the 254 residues"):
        embed(checkpoint, fasta, tmp_path / "x.h5", max_length=600, progress=False)
    assert not (tmp_path / "x.h5").exists()
    out = tmp_path / "beyond.h5"
    embed(checkpoint, fasta, out, window=5000, beyond_trained_context=True, progress=False)
    with h5py.File(out, "r") as handle:
        settings = json.loads(handle.attrs["settings"])
    assert settings["beyond_trained_context"] is True
    assert settings["long_sequences"]["window"] == 5000
    # Appending with the default (refusing) settings is a settings mismatch, not a silent mix.
    with pytest.raises(EmbedError, match="different settings"):
        embed(checkpoint, fasta, out, progress=False)


def test_digest_is_of_the_residues(records):
    rid, sequence = records[0]
    assert sequence_digest(sequence.encode()) == sequence_digest(sequence.upper().encode())
    assert len(sequence_digest(b"MKV")) == 64 and np.unique([sequence_digest(b"A")]).size == 1
