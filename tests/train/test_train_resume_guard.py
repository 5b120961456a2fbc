"""Resume only the same work: a changed dataset, model or option stops a resume in one line,
run_info.json keeps every session, overwrite=true starts afresh, resume_anyway=true records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import TINY_RUN, build_dataset, run_train, shared_dataset


def _args(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.dataset_dir={dataset}",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "checkpoint.every_n_train_steps=4",
        *TINY_RUN,
        *extra,
    ]


def _error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    other = build_dataset(tmp_path_factory.mktemp("other"), records=200, train_shards=1)
    return shared_dataset(tmp_path_factory), other


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory):
    """A finished 4-step run and copies of its records (the refusals must not touch them)."""
    cwd = tmp_path_factory.mktemp("cwd")
    run_dir = cwd / "run"
    result = run_train(_args(datasets[0], run_dir), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, run_dir


def _records(run_dir: Path) -> dict[str, bytes]:
    names = ("run_info.json", "config.yaml", "summary.json", "checkpoints/last.ckpt")
    return {name: (run_dir / name).read_bytes() for name in names}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("dataset", "dataset.dir"),
        ("model.num_layers=3", "model.num_layers: 2 -> 3"),
        ("optim.lr=1e-3", "optim.lr: 0.002 -> 0.001"),
        ("trainer.max_steps=8", "schedule.horizon: 4 -> 8"),
    ],
)
def test_changed_setup_is_refused_and_nothing_is_touched(trained, datasets, change, named):
    cwd, run_dir = trained
    before = _records(run_dir)
    extra = [f"data.dataset_dir={datasets[1]}"] if change == "dataset" else [change]
    line = _error_line(run_train(_args(datasets[0], run_dir, *extra), cwd))
    assert "cannot resume" in line and named in line
    assert "overwrite=true" in line and "resume_anyway=true" in line
    assert _records(run_dir) == before


def test_resume_anyway_is_recorded_and_overwrite_starts_afresh(trained, datasets, tmp_path):
    cwd, source = trained
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("run_info.json", "config.yaml", "checkpoints"):
        target = run_dir / name
        if (source / name).is_dir():
            target.mkdir()
            (target / "last.ckpt").write_bytes((source / name / "last.ckpt").read_bytes())
        else:
            target.write_bytes((source / name).read_bytes())
    first = json.loads((run_dir / "run_info.json").read_text())
    result = run_train(
        _args(datasets[0], run_dir, "trainer.max_steps=6", "resume_anyway=true"), cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["dataset"] == first["dataset"] and len(info["sessions"]) == 2
    assert info["sessions"][0] == first["sessions"][0]
    assert info["sessions"][1]["accepted_changes"] == ["schedule.horizon: 4 -> 6"]
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 6
    # A plain rerun of the same (now recorded) setup resumes without a word.
    assert run_train(_args(datasets[0], run_dir, "trainer.max_steps=6"), cwd).returncode == 0
    assert len(json.loads((run_dir / "run_info.json").read_text())["sessions"]) == 3
    # resume=false on a trained run dir would mix two runs.
    line = _error_line(run_train(_args(datasets[0], run_dir, "resume=false"), cwd))
    assert "already holds a trained run" in line and "overwrite=true" in line
    # overwrite=true: a fresh run on the other dataset, one session.
    result = run_train(_args(datasets[1], run_dir, "overwrite=true"), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["dataset"]["dir"] == str(datasets[1].resolve()) and len(info["sessions"]) == 1
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] is None
