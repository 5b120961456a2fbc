"""`wensu-train` as a user runs it: run directory contents, kill -9 + exact resume, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import TINY_RUN, kill_once_written, run_train, shared_dataset, start_train

import wensu.checkpoint
from wensu.train.run_info import unigram_baseline

STEPS = 24


def _args(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.dataset_dir={dataset}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=8",
        "checkpoint.every_n_train_steps=4",
        "model.dropout=0.1",  # exercises the dropout RNG across the resume
        "logging.sample_ids=true",
        *TINY_RUN,
        *extra,
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return shared_dataset(tmp_path_factory)


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """An uninterrupted run: the run-directory checks and the resume comparison use it."""
    cwd = tmp_path_factory.mktemp("cwd")
    run_dir = cwd / "reference"
    result = run_train(_args(dataset, run_dir), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_run_directory_records_everything(reference_run, dataset):
    run = reference_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["dataset_dir"] == str(dataset) and config["trainer"]["max_steps"] == STEPS
    info = json.loads((run / "run_info.json").read_text())
    assert info["dataset"]["manifest_sha256"] == wensu.data.shards.sha256_file(
        dataset / "manifest.json"
    )
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"]
    assert "git" in info
    baseline = unigram_baseline(dataset)
    assert info["unigram_baseline"]["perplexity"] == pytest.approx(baseline["perplexity"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == STEPS
    assert summary["unigram_baseline_perplexity"] == pytest.approx(baseline["perplexity"])
    assert summary["val_perplexity"] == pytest.approx(math.exp(summary["val_loss"]))
    assert summary["tokens_seen"] > 0 and summary["train_seconds"] > 0
    # tokens_seen is the non-pad tokens of every trained batch (from the sample log + crops).
    lines = (run / "samples" / "rank0.tsv").read_text().splitlines()
    assert [int(line.split("\t")[0]) for line in lines] == list(range(1, STEPS + 1))
    # CSV logs hold train and validation metrics.
    metrics_files = list((run / "logs").glob("version_*/metrics.csv"))
    rows = list(csv.DictReader(metrics_files[0].open()))
    train_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val_losses = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    # Validation every 8 steps during fit, plus the final validation of the summary.
    assert len(train_losses) >= STEPS // 2 - 1 and len(val_losses) == STEPS // 8 + 1
    assert summary["val_loss"] == pytest.approx(val_losses[-1])
    # Validation is deterministic: the final evaluation repeats the one at the last step.
    assert val_losses[-1] == pytest.approx(val_losses[-2], rel=1e-6)
    assert any(r.get("train/lr") for r in rows) and any(r.get("perf/tokens_per_s") for r in rows)
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["best_val_loss"] == pytest.approx(min(val_losses[:-1]))
    # Checkpoints: plain contents, loadable by wensu.load.
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == STEPS and last["hyper_parameters"]["max_length"] == 126
    encoder, alphabet = wensu.checkpoint.load(run / "checkpoints" / "best.ckpt")
    assert encoder.cfg.d_model == config["model"]["d_model"] and len(alphabet) == 33


def test_killed_run_resumes_to_the_same_weights(reference_run, dataset, tmp_path):
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_train(_args(dataset, run_dir), tmp_path, tmp_path / "first.log")
    kill_once_written(process, last)
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    # Same command again: the run dir has last.ckpt, so it resumes automatically.
    result = run_train(_args(dataset, run_dir), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(last) and summary["global_step"] == STEPS
    expected = _weights(reference_run / "checkpoints" / "last.ckpt")
    resumed = _weights(last)
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-6, atol=1e-7, msg=name)

    # Every step's batch after the resume is the one the uninterrupted run took.
    def by_step(path):
        return {line.split("\t")[0]: line for line in path.read_text().splitlines()}

    assert by_step(run_dir / "samples" / "rank0.tsv") == by_step(
        reference_run / "samples" / "rank0.tsv"
    )
    reference_summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["tokens_seen"] == reference_summary["tokens_seen"]
    assert summary["val_loss"] == pytest.approx(reference_summary["val_loss"], rel=1e-6)


def _error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_unknown_key_is_one_line_error(tmp_path, dataset):
    line = _error_line(
        run_train([f"data.dataset_dir={dataset}", "optim.learning_rate=1"], tmp_path)
    )
    assert "optim.learning_rate" in line


def test_missing_shard_is_one_line_error(tmp_path, dataset):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in dataset.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "valid").unlink()
    result = run_train(_args(broken, tmp_path / "run"), tmp_path)
    line = _error_line(result)
    assert "valid/shard-00000.h5" in line and "missing" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sweep_runs_one_job_per_value(tmp_path, dataset):
    result = run_train(
        [
            "-m",
            f"data.dataset_dir={dataset}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "checkpoint.every_n_train_steps=2",
            *TINY_RUN,
            "optim.lr=1e-3,3e-3",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = []
    for job in ("0", "1"):
        config = yaml.safe_load((tmp_path / "sweep" / job / "config.yaml").read_text())
        lrs.append(config["optim"]["lr"])
        summary = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert summary["global_step"] == 2
    assert lrs == [1e-3, 3e-3]
