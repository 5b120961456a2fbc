"""The cells preprocessing app as a user runs it: a subprocess from a directory outside the
checkout, killed with SIGKILL mid-run and resumed to the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_shared
from wensu.preprocessing.cells import run_cells
from wensu.preprocessing.errors import InputError

INPUTS = ("kang2018_ifnb_stim_muscat_806", "pbmc_ding2020_celseq2_scmoo_243")
# The console script as a user types it: `wensu-preprocess data=cells ...`.
PREPROCESS = [str(Path(sys.executable).parent / "wensu-preprocess"), "data=cells"]
REPORTS = (
    "vocab.json",
    "panels.json",
    "stats.json",
    "quarantine.tsv",
    "duplicates.tsv",
    "genes_dropped.tsv",
)


def _command(output: str) -> list[str]:
    files = ",".join(str(require_shared(f"singlecell/{name}.h5ad")) for name in INPUTS)
    return [
        *PREPROCESS,
        f"input=[{files}]",
        f"output={output}",
        "shard_size_cells=60",
        "progress=false",
    ]


def _run(command, cwd, env=None):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _manifest(path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.pop("created")
    return manifest


def test_resume_after_kill9_gives_identical_output(tmp_path):
    # The uninterrupted reference run goes in-process (same settings: progress is runtime-only).
    run_cells(
        input=[str(require_shared(f"singlecell/{name}.h5ad")) for name in INPUTS],
        output=str(tmp_path / "clean"),
        shard_size_cells=60,
    )

    marker = tmp_path / "paused"
    env = dict(
        os.environ, WENSU_CELLS_TEST_PAUSE_AFTER_SHARDS="4", WENSU_CELLS_TEST_PAUSE_FILE=str(marker)
    )
    process = subprocess.Popen(
        _command("resumed"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never reached its 4th shard"
            time.sleep(0.2)
    finally:
        process.kill()  # SIGKILL: no cleanup handlers run
        process.wait()
        process.stderr.close()
    resumed_dir = tmp_path / "resumed"
    assert not (resumed_dir / "manifest.json").exists()
    assert len(list(resumed_dir.glob("*/shard-*.h5"))) == 4

    resumed = _run(_command("resumed"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "cells written" in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["read"] == 806 + 243
    assert _manifest(resumed_dir) == _manifest(tmp_path / "clean")
    for name in REPORTS:
        assert (resumed_dir / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert sorted(p.name for p in resumed_dir.glob("*/*")) == sorted(
        p.name for p in (tmp_path / "clean").glob("*/*")
    )


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_text("plain text, not an AnnData file\n")
    command = [*PREPROCESS, f"input=[{path}]", "output=out"]
    result = _run(command, tmp_path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "not a readable .h5ad" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(InputError, match="missing.h5ad: input not found"):
        run_cells(input=[str(tmp_path / "missing.h5ad")], output=str(tmp_path / "out2"))


def test_unknown_data_kind_is_one_line(tmp_path):
    result = _run([PREPROCESS[0], "data=genomes", "output=out"], tmp_path)
    assert result.returncode == 2
    assert "data=genomes: choose one of proteins, cells" in result.stderr
    assert "Traceback" not in result.stderr


def test_module_entry_point_still_runs(tmp_path):
    result = _run(
        [sys.executable, "-P", "-m", "wensu.preprocessing.cells.cli", "--cfg", "job"], tmp_path
    )
    assert result.returncode == 0 and "min_genes" in result.stdout
