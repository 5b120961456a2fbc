"""wensu.embed: embeddings equal a direct Encoder.forward, long sequences, resume, bad inputs."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.checkpoint import save_encoder_checkpoint
from wensu.data.fasta import parse_header
from wensu.embed import EmbedError, embed
from wensu.embed_batching import plan_windows, token_budget_batches
from wensu.embed_writer import SLEEP_AFTER_ENV, parts_dir_of
from wensu.embeddings import encode_id, read
from wensu.interop import save_hf
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
from wensu.resources import default_fasta

ALL_KINDS = ["mean", "per_residue", "cls"]


def real_records(count: int, max_length: int = 300) -> list[tuple[str, str]]:
    """The first ``count`` E. coli proteins of at most ``max_length`` residues (embedded sample)."""
    records: list[tuple[str, str]] = []
    with gzip.open(default_fasta(), "rt") as handle:
        header, parts = None, []
        for line in handle:
            if line.startswith(">"):
                if header is not None and len("".join(parts)) <= max_length:
                    records.append((header, "".join(parts)))
                if len(records) == count:
                    break
                header, parts = parse_header(line[1:].strip()).id, []
            else:
                parts.append(line.strip())
    return records


def write_fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{rid} some description\n{seq}\n" for rid, seq in records))
    return path


def tiny_encoder(seed: int = 0, ffn: str = "dense", **attention) -> Encoder:
    torch.manual_seed(seed)
    cfg = EncoderConfig(
        num_layers=2,
        d_model=32,
        num_heads=4,
        ffn_dim=64,
        ffn=ffn,
        moe_num_experts=4,
        moe_capacity_factor=0.5,
        attention=attention,
    )
    return Encoder(cfg).eval()


def direct(encoder: Encoder, sequence: str, layers=(0, 2)) -> dict[int, np.ndarray]:
    """Reference: one sequence alone through Encoder.forward, specials stripped."""
    tokens = torch.from_numpy(get_alphabet().encode(sequence))[None]
    with torch.no_grad():
        out = encoder(tokens, repr_layers=list(layers))
    return {layer: out["representations"][layer][0, 1:-1].numpy() for layer in layers}


def h5_bytes(path: Path) -> dict[str, bytes]:
    """Every dataset of a file as raw bytes, keyed by its path."""
    found: dict[str, bytes] = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()].tobytes())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return found


@pytest.fixture(scope="module")
def records():
    return real_records(8)


@pytest.fixture()
def fasta(tmp_path, records):
    return write_fasta(tmp_path / "proteins.fasta", records)


@pytest.mark.parametrize("backend", ["dense", "chunked", "flex"])
def test_embeddings_equal_direct_forward_for_every_backend(tmp_path, fasta, records, backend):
    encoder = tiny_encoder(backend=backend, window=16, block_size=16)
    embed(encoder, fasta, tmp_path / "e.h5", layers=[0, -1], pooling=ALL_KINDS, progress=False)
    # flex compiles one CPU kernel per length for the reference: check a single sequence.
    for rid, seq in records[:1] if backend == "flex" else records:
        reference = direct(encoder, seq)
        for layer in (0, 2):
            per_residue = read(tmp_path / "e.h5", layer=layer, kind="per_residue")[rid]
            mean = read(tmp_path / "e.h5", layer=layer, kind="mean")[rid]
            np.testing.assert_allclose(per_residue, reference[layer], atol=1e-5)
            np.testing.assert_allclose(mean, reference[layer].mean(0), atol=1e-5)


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_batch_of_one_equals_large_batches(tmp_path, fasta, ffn):
    # MoE: capacity 0.5 would drop tokens depending on batch-mates; embedding lifts the limit.
    encoder = tiny_encoder(ffn=ffn)
    embed(encoder, fasta, tmp_path / "one.h5", pooling=ALL_KINDS, max_tokens=1, progress=False)
    embed(encoder, fasta, tmp_path / "many.h5", pooling=ALL_KINDS, max_tokens=4096, progress=False)
    for kind in ALL_KINDS:
        single, batched = (
            read(tmp_path / "one.h5", kind=kind),
            read(tmp_path / "many.h5", kind=kind),
        )
        for rid in single:
            np.testing.assert_allclose(single[rid], batched[rid], atol=1e-5)


def test_token_budget_batches_never_exceed_budget():
    lengths = [5, 300, 17, 17, 120, 1, 64, 250, 3000]
    batches = token_budget_batches(lengths, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch) + 2
        assert len(batch) == 1 or len(batch) * width <= 600
    assert batches[0] == [8]  # longest first, alone (over budget)


def test_windowed_long_sequences_take_chunked_path_and_equal_dense(tmp_path, records):
    encoder = tiny_encoder(window=8)
    embed(
        encoder,
        write_fasta(tmp_path / "p.fa", records),
        tmp_path / "e.h5",
        pooling=ALL_KINDS,
        max_length=40,
        progress=False,
    )
    per_residue = read(tmp_path / "e.h5", kind="per_residue")
    cls = read(tmp_path / "e.h5", kind="cls")
    assert any(len(seq) > 40 for _, seq in records)
    for rid, seq in records:
        tokens = torch.from_numpy(get_alphabet().encode(seq))[None]
        with torch.no_grad():
            full = encoder(tokens, repr_layers=[2])["representations"][2][0]
        np.testing.assert_allclose(per_residue[rid], full[1:-1].numpy(), atol=1e-5)
        np.testing.assert_allclose(cls[rid], full[0].numpy(), atol=1e-5)


def test_dense_long_sequence_is_stitched_from_windows(tmp_path, records):
    encoder = tiny_encoder()
    sequence = "".join(seq for _, seq in records)[:100]
    window, stride = 40, 25
    embed(
        encoder,
        write_fasta(tmp_path / "p.fa", [("long", sequence)]),
        tmp_path / "e.h5",
        pooling=ALL_KINDS,
        max_length=40,
        window=window,
        stride=stride,
        max_tokens=window + 2,
        progress=False,
    )
    got = {kind: read(tmp_path / "e.h5", kind=kind)["long"] for kind in ALL_KINDS}
    spans = plan_windows(len(sequence), window, stride)
    assert spans == [(0, 40), (25, 65), (50, 90), (60, 100)]
    outputs = [direct(encoder, sequence[s:e], layers=(2,))[2] for s, e in spans]
    # Residues seen by one window equal that window's forward exactly.
    np.testing.assert_array_equal(got["per_residue"][:25], outputs[0][:25])
    # Overlaps are the average of the windows holding them.
    np.testing.assert_allclose(
        got["per_residue"][30], (outputs[0][30] + outputs[1][5]) / 2, atol=1e-6
    )
    np.testing.assert_allclose(
        got["per_residue"][62], (outputs[1][37] + outputs[2][12] + outputs[3][2]) / 3, atol=1e-6
    )
    np.testing.assert_allclose(got["mean"], got["per_residue"].mean(0), atol=1e-6)
    # Within the first window's reach the stitched result tracks a full dense pass only loosely
    # (it lacks the far context): documented, not asserted beyond finiteness.
    assert np.isfinite(got["per_residue"]).all() and got["per_residue"].shape == (100, 32)


def test_35k_residue_sequence_embeds_on_cpu(tmp_path):
    proteome = require_shared("sequences/uniprot_proteomes/UP000002311-S.cerevisiae.fasta.gz")
    pieces, total = [], 0
    with gzip.open(proteome, "rt") as handle:
        for line in handle:
            if not line.startswith(">"):
                pieces.append(line.strip())
                total += len(pieces[-1])
            if total >= 35_000:
                break
    sequence = "".join(pieces)[:35_000]
    torch.manual_seed(0)
    cfg = EncoderConfig(
        num_layers=1,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        attention={"backend": "dense", "window": 32, "block_size": 64},
    )
    encoder = Encoder(cfg).eval()
    output = tmp_path / "long.h5"
    embed(
        encoder,
        write_fasta(tmp_path / "long.fa", [("yeast_35k", sequence)]),
        output,
        pooling=["mean", "per_residue"],
        progress=False,
    )
    per_residue = read(output, kind="per_residue")["yeast_35k"]
    assert per_residue.shape == (35_000, 16) and np.isfinite(per_residue).all()
    np.testing.assert_allclose(read(output)["yeast_35k"], per_residue.mean(0), atol=1e-5)


def kill_midway(checkpoint: Path, fasta: Path, output: Path, options: dict, sleepers: int) -> None:
    """Run embed in a subprocess, SIGKILL it once ``sleepers`` writers sit on a half segment."""
    script = textwrap.dedent(f"""
        from wensu.embed import embed
        embed({str(checkpoint)!r}, {str(fasta)!r}, {str(output)!r}, progress=False, **{options!r})
    """)
    env = dict(os.environ, **{SLEEP_AFTER_ENV: "3"})
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )
    children: list[int] = []
    try:
        seen = 0
        for line in proc.stderr:
            seen += SLEEP_AFTER_ENV in line
            if seen == sleepers:
                break
        children = _children(proc.pid)
        assert len(children) >= sleepers - 1 if sleepers > 1 else True
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    for child in children:  # worker processes die with their parent
        for _ in range(100):
            if not Path(f"/proc/{child}").exists() or "Z" in _proc_state(child):
                break
            time.sleep(0.1)
        else:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"worker {child} outlived its killed parent")


def _stat(pid: int | str) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return ["Z", "0"]


def _proc_state(pid: int) -> str:
    return _stat(pid)[0]


def _children(pid: int) -> list[int]:
    procs = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [int(p) for p in procs if _stat(p)[1] == str(pid)]


@pytest.mark.parametrize("devices", [1, 2])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, records, devices):
    checkpoint = tmp_path / "tiny.ckpt"
    save_encoder_checkpoint(tiny_encoder(), checkpoint)
    fasta = write_fasta(tmp_path / "p.fa", records)
    options = dict(
        pooling=ALL_KINDS, layers=[0, -1], max_tokens=300, segment_sequences=2, devices=devices
    )
    reference = tmp_path / "reference.h5"
    embed(checkpoint, fasta, reference, progress=False, **options)

    killed = tmp_path / "killed.h5"
    kill_midway(checkpoint, fasta, killed, options, sleepers=devices)
    parts = parts_dir_of(killed)
    # Each writer committed one segment of 2 sequences and holds a third in an open one.
    assert len(list(parts.glob("seg-*.h5"))) == devices
    assert len(list(parts.glob("seg-*.h5.tmp"))) == devices
    assert not killed.exists()

    summary = embed(checkpoint, fasta, killed, progress=False, **options)
    assert (summary.skipped, summary.written, summary.total) == (2 * devices, 8 - 2 * devices, 8)
    assert not parts.exists()
    assert h5_bytes(killed) == h5_bytes(reference)
    if devices == 2:  # and the two-process result is the single-process one
        single = tmp_path / "single.h5"
        embed(checkpoint, fasta, single, progress=False, **{**options, "devices": 1})
        for kind in ALL_KINDS:
            one, two = read(single, kind=kind), read(killed, kind=kind)
            assert sorted(one) == sorted(two)
            for rid in one:
                np.testing.assert_allclose(two[rid], one[rid], atol=1e-5)


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


def test_rerun_skips_done_and_refuses_other_settings(tmp_path, fasta, records):
    encoder = tiny_encoder()
    output = tmp_path / "e.h5"
    first = embed(encoder, fasta, output, progress=False)
    assert (first.written, first.total) == (len(records), len(records))
    again = embed(encoder, fasta, output, progress=False)
    assert (again.written, again.skipped) == (0, len(records))
    with pytest.raises(EmbedError, match="e.h5 was made with different settings.*layers"):
        embed(encoder, fasta, output, layers=[0], progress=False)
    with pytest.raises(EmbedError, match="checkpoint_sha256"):
        embed(tiny_encoder(seed=1), fasta, output, progress=False)


def test_a_second_run_on_the_same_output_is_refused(tmp_path, fasta):
    output = tmp_path / "e.h5"
    with open(tmp_path / "e.h5.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EmbedError, match="being written by another wensu-embed run"):
            embed(tiny_encoder(), fasta, output, progress=False)
    assert embed(tiny_encoder(), fasta, output, progress=False).written == 8
    assert not (tmp_path / "e.h5.lock").exists()


def test_appending_new_records_keeps_old_ones(tmp_path, records):
    encoder = tiny_encoder()
    output = tmp_path / "e.h5"
    embed(encoder, write_fasta(tmp_path / "a.fa", records[:3]), output, progress=False)
    before = read(output)
    summary = embed(encoder, write_fasta(tmp_path / "b.fa", records), output, progress=False)
    assert (summary.skipped, summary.written, summary.total) == (3, 5, 8)
    after = read(output)
    for rid, vector in before.items():
        np.testing.assert_array_equal(after[rid], vector)


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
