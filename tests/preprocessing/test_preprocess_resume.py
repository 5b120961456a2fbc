"""kill -9 of a running ``wensu-preprocess``, then the same command again: the result is
identical to an uninterrupted run (manifest minus ``created``, shard bytes), and the shards
finished before the kill are kept, not rewritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_shared
from wensu.preprocessing import run_preprocess

from wensu.data.shards import sha256_file

CLI = str(Path(sys.executable).with_name("wensu-preprocess"))
SETTINGS = {"shard_size_records": 150, "chunk_bytes": 32768, "max_length": 500}


def _inputs() -> list[str]:
    return [
        str(require_shared("sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta")),
        str(require_shared("sequences/prokka_sprot/prokka_Mitochondria_sprot.fasta.gz")),
    ]


def _command(output: Path, workers: int) -> list[str]:
    overrides = [f"{k}={v}" for k, v in SETTINGS.items()]
    return [CLI, f"input=[{','.join(_inputs())}]", f"output={output}",
            f"num_workers={workers}", "progress=false", *overrides]  # fmt: skip


def _without_created(output: Path) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("created")
    return manifest


def _kill_when_paused(command: list[str], cwd: Path, pause: str) -> None:
    marker = cwd / "paused"
    env = dict(os.environ, WENSU_PREPROCESS_TEST_PAUSE=pause,
               WENSU_PREPROCESS_TEST_PAUSE_FILE=str(marker))  # fmt: skip
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"run ended before the pause: {proc.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("run never reached the pause point")
            time.sleep(0.05)
    finally:
        # The whole process group: the run and its pool workers, as a machine crash would.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("reference") / "out"
    run_preprocess(input=_inputs(), output=str(output), num_workers=1, progress=False, **SETTINGS)
    return output


@pytest.mark.shared_data
@pytest.mark.parametrize("pause", ["shard:4", "part:3", "partition:2"])
def test_kill_minus_9_then_rerun_gives_identical_output(tmp_path, reference, pause):
    output = tmp_path / "out"
    command = _command(output, workers=2)
    _kill_when_paused(command, tmp_path, pause)
    assert not (output / "manifest.json").exists()
    before = {p: p.stat().st_mtime_ns for p in output.glob("*/shard-*.h5")}
    if pause.startswith("shard"):
        assert len(before) == 4
    assert not list(output.glob("*/*.tmp"))

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming an interrupted run" in rerun.stderr
    assert _without_created(output) == _without_created(reference)
    manifest = _without_created(output)
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert sha256_file(output / shard["path"]) == shard["sha256"]
            assert (output / shard["path"]).read_bytes() == (reference / shard["path"]).read_bytes()
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    for name in ("quarantine.tsv", "duplicates.tsv", "stats.json"):
        assert (output / name).read_bytes() == (reference / name).read_bytes()
    assert not (output / ".work").exists()


@pytest.mark.shared_data
def test_rerun_of_a_finished_run_changes_nothing(reference):
    first = _without_created(reference)
    stamps = {p: p.stat().st_mtime_ns for p in reference.glob("*/shard-*.h5")}
    summary = run_preprocess(
        input=_inputs(), output=str(reference), num_workers=2, progress=False, **SETTINGS
    )
    assert summary["counts"] == first["counts"]
    assert _without_created(reference) == first
    assert {p: p.stat().st_mtime_ns for p in reference.glob("*/shard-*.h5")} == stamps


def test_other_settings_into_a_finished_output_need_overwrite(tmp_path):
    from wensu.preprocessing import OutputExistsError

    (tmp_path / "a.fa").write_text(">a\nMKV\n>b\nMKL\n")
    (tmp_path / "b.fa").write_text(">c\nMKV\n")
    output = tmp_path / "out"
    run_preprocess(input=[str(tmp_path / "a.fa")], output=str(output), shard_size_records=1,
                   split={"train": 1.0, "valid": 0.0, "test": 0.0}, progress=False)  # fmt: skip
    assert len(list(output.glob("train/shard-*.h5"))) == 2
    with pytest.raises(OutputExistsError, match="overwrite=true"):
        run_preprocess(input=[str(tmp_path / "b.fa")], output=str(output), progress=False)
    run_preprocess(input=[str(tmp_path / "b.fa")], output=str(output), overwrite=True,
                   split={"train": 1.0, "valid": 0.0, "test": 0.0}, progress=False)  # fmt: skip
    assert _without_created(output)["counts"]["read"] == 1
    assert sorted(p.name for p in output.glob("*/shard-*.h5")) == ["shard-00000.h5"]


def test_damaged_shard_of_a_finished_run_is_rebuilt(tmp_path):
    (tmp_path / "a.fa").write_text(">a\nMKV\n>b\nMKL\n")
    output = tmp_path / "out"
    settings = {"input": [str(tmp_path / "a.fa")], "output": str(output), "progress": False}
    run_preprocess(**settings)
    reference = _without_created(output)
    shard = output / reference["splits"]["train"]["shards"][0]["path"]
    good = shard.read_bytes()
    shard.write_bytes(good[:100])
    run_preprocess(**settings)
    assert shard.read_bytes() == good and _without_created(output) == reference
