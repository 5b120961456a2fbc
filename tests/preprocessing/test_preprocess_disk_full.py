"""A full disk (a simulated ``OSError(ENOSPC)``) while writing a shard or a parsed part: a
one-line error naming the file, no half-written file left to be trusted, and the same command
then resumes to exactly the output of an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import wensu.preprocessing.parts as parts
from wensu.preprocessing import OutputError, run_preprocess

import wensu.data.shards as shards

SETTINGS = {"chunk_bytes": 4096, "shard_size_records": 25, "progress": False}


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def inputs(tmp_path) -> list[str]:
    path = tmp_path / "in.fa"
    path.write_text("".join(f">r{i}\n{'MKVLAAGHIKL'[: 3 + i % 8] * (1 + i % 5)}\n"
                            for i in range(400)))  # fmt: skip
    return [str(path)]


def _outputs(output: Path) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("created")
    files = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*")
             if p.is_file() and p.name != "manifest.json"}  # fmt: skip
    return {"manifest": manifest, **files}


@pytest.mark.parametrize("where", ["shard", "part"])
def test_disk_full_is_a_clear_error_and_the_rerun_resumes(inputs, tmp_path, monkeypatch, where):
    reference = tmp_path / "reference"
    run_preprocess(input=inputs, output=str(reference), **SETTINGS)
    output = tmp_path / "out"
    calls = {"n": 0}
    real = shards.fsync_file if where == "shard" else parts.os.replace

    def fail_third(*args, **kwargs):  # let a few writes through, then the disk is full
        calls["n"] += 1
        if calls["n"] == 3:
            _disk_full()
        return real(*args, **kwargs)

    if where == "shard":
        monkeypatch.setattr(shards, "fsync_file", fail_third)  # after the HDF5 data is written
    else:
        monkeypatch.setattr(parts.os, "replace", fail_third)
    with pytest.raises(OutputError, match="no space left on device") as caught:
        run_preprocess(input=inputs, output=str(output), **SETTINGS)
    assert "\n" not in str(caught.value) and str(output) in str(caught.value)
    assert not (output / "manifest.json").exists()
    assert not list(output.glob("*/*.tmp")) and not list(output.glob("*/*.h5.tmp"))
    monkeypatch.undo()
    summary = run_preprocess(input=inputs, output=str(output), **SETTINGS)
    assert _outputs(output) == _outputs(reference)
    if where == "shard":
        assert summary["reused_shards"] == 2  # the two shards written before it are kept
