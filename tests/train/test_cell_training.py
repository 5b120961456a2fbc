"""Masked-expression pretraining: the loss against a manual computation, and `wensu-train
experiment=cells_pbmc` on a tiny real cell dataset (run directory, checkpoint, kill -9 resume)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import require_shared
from train_helpers import kill_once_written, run_train, start_train

from wensu.checkpoint import load_cell_checkpoint
from wensu.train.cell_datamodule import CellDataModule
from wensu.train.cell_module import CellMaskedModule, mask_bins

STEPS = 12
MODEL = {
    "vocab_size": 30,
    "num_bins": 9,
    "num_layers": 1,
    "d_model": 16,
    "num_heads": 2,
    "ffn_dim": 32,
    "max_genes": 16,
}


def _args(dataset: Path, run_dir: Path) -> list[str]:
    return [
        "experiment=cells_pbmc",
        f"data.dataset_dir={dataset}",
        f"hydra.run.dir={run_dir}",
        "model.num_layers=1",
        "model.d_model=16",
        "model.num_heads=2",
        "model.ffn_dim=32",
        "model.dropout=0.1",  # exercises the dropout RNG across the resume
        "data.max_genes=48",
        "data.max_tokens=480",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=2",
        "~trainer.max_time",
        "checkpoint.every_n_train_steps=3",
        "schedule.warmup_steps=2",
        "threads=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.log_every_n_steps=2",
        "logging.throughput_window=2",
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A real cell dataset: the 243 CEL-Seq2 PBMCs of Ding et al. 2020, preprocessed."""
    from wensu.preprocessing.cells import run_cells

    source = require_shared("singlecell/pbmc_ding2020_celseq2_scmoo_243.h5ad")
    out = tmp_path_factory.mktemp("cells") / "data"
    run_cells(
        input=[str(source)],
        output=str(out),
        shard_size_cells=80,
        progress=False,
        split={"train": 0.8, "valid": 0.2, "test": 0.0, "seed": 0},
    )
    return out


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    result = run_train(_args(dataset, cwd / "reference"), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "reference"


def test_loss_is_cross_entropy_over_masked_genes_only():
    torch.manual_seed(0)
    module = CellMaskedModule(MODEL, [f"G{i}" for i in range(25)], [1 / 9] * 9, seed=3)
    genes = torch.tensor([[5, 9, 12, 20, 1, 1], [6, 7, 8, 10, 11, 29]])
    bins = torch.tensor([[1, 2, 3, 8, 0, 0], [4, 4, 1, 2, 5, 6]])
    padding = genes.eq(1)
    batch = {"genes": genes, "bins": bins, "padding_mask": padding}
    out = module.masked_step(batch, torch.Generator().manual_seed(11))
    inputs, selected = mask_bins(bins, padding, 0.15, 9, torch.Generator().manual_seed(11))
    assert not (selected & padding).any() and selected.any()
    assert torch.equal(inputs[selected], torch.full_like(inputs[selected], 9))
    assert torch.equal(inputs[~selected], bins[~selected])
    logits = module.model(genes, inputs, padding)["bin_logits"]
    expected = F.cross_entropy(logits[selected], bins[selected])
    torch.testing.assert_close(out["loss"], expected)
    assert int(out["count"]) == int(selected.sum())
    # Uniform frequencies: the baseline costs log(9) nats per masked gene.
    torch.testing.assert_close(
        out["baseline_sum"] / out["count"], torch.tensor(9.0).log(), rtol=1e-5, atol=1e-6
    )
    # A masked gene's prediction cannot see its own bin: changing it changes nothing.
    changed = bins.clone()
    changed[selected] = 8 - changed[selected] % 8
    again = module.masked_step({**batch, "bins": changed}, torch.Generator().manual_seed(11))[
        "loss_sum"
    ]
    expected_changed = F.cross_entropy(logits[selected], changed[selected], reduction="sum")
    torch.testing.assert_close(again, expected_changed)


def test_datamodule_crops_cells_reproducibly(dataset):
    data = CellDataModule(dataset, max_genes=32, max_tokens=320, verify="open")
    data.setup()
    first = data.train_set[(0, 0, 3)]
    assert (
        len(first["genes"]) == 32
        and data.train_set[(0, 0, 3)]["genes"].tolist() == first["genes"].tolist()
    )
    assert data.train_set[(1, 0, 3)]["genes"].tolist() != first["genes"].tolist()
    batch = next(iter(data.train_dataloader()))
    assert batch["genes"].shape[1] <= 32
    assert batch["num_tokens"] == int((~batch["padding_mask"]).sum())
    assert torch.equal(batch["genes"].eq(1), batch["padding_mask"])


def test_cli_run_writes_a_loadable_cell_checkpoint(reference_run, dataset):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["kind"] == "cells" and summary["global_step"] == STEPS
    assert summary["cells_trained"] > 0 and summary["cells_per_s"] > 0
    assert summary["val_baseline_loss"] > 0 and summary["val_loss"] > 0
    raw = torch.load(reference_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["kind"] == "cells"
    encoder, vocab, info = load_cell_checkpoint(reference_run / "checkpoints" / "last.ckpt")
    vocab_file = json.loads((dataset / "vocab.json").read_text())
    assert vocab == vocab_file["genes"] and encoder.cfg.vocab_size == len(vocab) + 5
    assert encoder.cfg.max_genes == 48 and info["global_step"] == STEPS
    assert abs(sum(info["bin_frequencies"]) - 1) < 1e-9
    assert (reference_run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # Validation scores fixed cells and masks: the final evaluation repeats the last one.
    rows = list(csv.DictReader(next((reference_run / "logs").glob("*/metrics.csv")).open()))
    val = [(float(r["val/loss"]), float(r["val/baseline_loss"])) for r in rows if r["val/loss"]]
    assert len(val) == STEPS // 6 + 1 and val[-1] == pytest.approx(val[-2], rel=1e-6)
    assert summary["val_loss"] == pytest.approx(val[-1][0], rel=1e-6)


def test_killed_run_resumes_to_the_same_weights(reference_run, dataset, tmp_path):
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_train(_args(dataset, run_dir), tmp_path, tmp_path / "first.log")
    kill_once_written(process, last)
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    result = run_train(_args(dataset, run_dir), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(last) and summary["global_step"] == STEPS
    expected = torch.load(reference_run / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, msg=name)
    reference = json.loads((reference_run / "summary.json").read_text())
    assert summary["tokens_seen"] == reference["tokens_seen"]
    assert summary["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-6)


def test_bad_config_is_one_line(dataset, tmp_path):
    result = run_train([*_args(dataset, tmp_path / "bad"), "model.vocab_size=99"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.vocab_size=99 but the dataset" in result.stderr.strip().splitlines()[-1]
