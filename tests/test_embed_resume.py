"""wensu.embed: kill -9 and resume gives the uninterrupted result; reruns skip done ids,
refuse other settings and append new records."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import helpers_embed
import numpy as np
import pytest
from helpers_embed import ALL_KINDS, h5_bytes, tiny_encoder, write_fasta

from wensu.checkpoint import save_encoder_checkpoint
from wensu.embed import EmbedError, embed
from wensu.embed.writer import SLEEP_AFTER_ENV, parts_dir_of
from wensu.embeddings import read

# The shared fixtures (a plain assignment, so pytest sees them here).
records, fasta = helpers_embed.records, helpers_embed.fasta


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
            seen += line.count(SLEEP_AFTER_ENV)  # two writers may share one line
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
