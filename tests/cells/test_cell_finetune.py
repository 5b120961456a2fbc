"""Cell-type fine-tuning: `wensu-train experiment=cells_finetune` on real cells (committed cuts of
Kang 2018 control and pbmc3k), kill -9 resume, early stopping, the random-init twin, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from anndata import read_h5ad
from cell_helpers import KANG, PBMC3K, tiny_pretrained, write_h5ad

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_helpers import kill_once_written, run_train, start_train  # noqa: E402

from wensu.cell_vocab import NUM_SPECIAL  # noqa: E402
from wensu.checkpoint import load_cell_classifier  # noqa: E402
from wensu.data.cell_inputs import CellInputError  # noqa: E402
from wensu.train.cell_finetune import class_weights, macro_f1  # noqa: E402
from wensu.train.cell_labelled_data import (  # noqa: E402
    ClassifyExamples,
    group_split,
    load_labelled_tokens,
)

STEPS = 12


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    # seed 7: the twin's fresh weights (seed 0) must differ from these "pretrained" ones
    return tiny_pretrained(tmp_path_factory.mktemp("pre") / "pretrained.ckpt", seed=7)


def _args(pretrained: Path, run_dir: Path, files: str | None = None) -> list[str]:
    return [
        "experiment=cells_finetune",
        f"finetune.checkpoint={pretrained}",
        f"data.train_files=[{files or f'{KANG},{PBMC3K}:cell_type_coarse'}]",
        f"hydra.run.dir={run_dir}",
        "finetune.dropout=0.2",  # exercises the dropout RNG across the resume
        "data.max_genes=48",
        "data.max_tokens=960",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=6",
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
def reference_run(pretrained, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finetune") / "run"
    result = run_train(_args(pretrained, run_dir), run_dir.parent, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_run_writes_a_classifier_that_loads_safely(reference_run, pretrained):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["kind"] == "cells_labelled" and summary["global_step"] == STEPS
    assert summary["pretrained"] is True and len(summary["classes"]) == 8
    # Validation is whole donors of the Kang cut (pbmc3k has none: it is one group).
    assert summary["split"]["by"] == "donor" and summary["split"]["held_out"]
    assert all(g.startswith("kang_ctrl_cut/") for g in summary["split"]["held_out"])
    assert 0 <= summary["val_macro_f1"] <= 1 and summary["cpu_seconds_this_session"] > 0
    best = reference_run / "checkpoints" / "best.ckpt"
    raw = torch.load(best, weights_only=True)
    assert raw["hyper_parameters"]["kind"] == "cells_classifier"
    classifier, info = load_cell_classifier(best)
    assert info["classes"] == summary["classes"]
    kang, pbmc3k = (set(map(str, read_h5ad(p, backed="r").var_names)) for p in (KANG, PBMC3K))
    assert info["panel"] == sorted(kang & pbmc3k)  # gene_panel=shared
    assert info["tokens"]["max_genes"] == 48 and info["source"]["pretrained"] is True
    # The encoder started from the pretrained weights (the bin head is never trained).
    start = torch.load(pretrained, weights_only=True)["state_dict"]["model.bin_head.out.weight"]
    torch.testing.assert_close(classifier.encoder.bin_head.out.weight, start)


def test_killed_run_resumes_to_the_same_weights(reference_run, pretrained, tmp_path):
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_train(_args(pretrained, run_dir), tmp_path, tmp_path / "first.log")
    kill_once_written(process, last, timeout=900)
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    result = run_train(_args(pretrained, run_dir), tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == str(last) and summary["global_step"] == STEPS
    expected = torch.load(reference_run / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, msg=name)


def test_random_init_twin_and_early_stopping(pretrained, tmp_path):
    # lr 1e-30 leaves the weights bit-identical, so val/loss never improves: stop after
    # patience=1 validation without improvement (the 2nd of 2 possible).
    args = _args(pretrained, tmp_path / "twin")
    args += ["finetune.pretrained=false", "finetune.patience=1", "optim.lr=1e-30"]
    result = run_train(args, tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "twin" / "summary.json").read_text())
    assert summary["pretrained"] is False and summary["global_step"] == 12
    assert summary["stopped_early"] is True
    classifier, _ = load_cell_classifier(tmp_path / "twin" / "checkpoints" / "best.ckpt")
    start = torch.load(pretrained, weights_only=True)["state_dict"]["model.gene_embed.weight"]
    assert not torch.equal(classifier.encoder.gene_embed.weight, start)


def test_bad_input_is_one_line_with_exit_2(pretrained, tmp_path):
    cut = read_h5ad(PBMC3K)
    single = write_h5ad(
        tmp_path / "single.h5ad", cut.X, cut.var_names, obs={"kind": ["B"] * cut.n_obs}
    )
    from wensu.checkpoint import save_encoder_checkpoint
    from wensu.model import EncoderConfig, build_encoder

    protein = tmp_path / "protein.ckpt"
    save_encoder_checkpoint(build_encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2,
                                                        ffn_dim=32)), protein)  # fmt: skip
    cases = [
        (_args(pretrained, tmp_path / "a", f"{KANG}:no_such_column"), "no label column"),
        (_args(pretrained, tmp_path / "b", f"{single}:kind"), "single class"),
        (_args(protein, tmp_path / "c"), "a protein model checkpoint"),
        (_args(pretrained, tmp_path / "d", str(tmp_path / "missing.h5ad")), "no such .h5ad"),
    ]
    for args, message in cases:
        result = run_train(args, tmp_path, timeout=600)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in lines[-1], lines[-1]


def test_group_split_holds_out_whole_donors_and_keeps_every_class():
    groups = np.array(["f/a"] * 50 + ["f/b"] * 50 + ["f/c"] * 50 + ["g"] * 200)
    labels = np.array([0, 1] * 175)
    train, val, held = group_split(groups, labels, 0.15)
    assert set(groups[val]) == set(held) and not set(groups[train]) & set(held)
    assert set(labels[train]) == {0, 1} and "g" not in held
    with pytest.raises(CellInputError, match="one group"):
        group_split(np.array(["x"] * 10), np.array([0, 1] * 5), 0.2)


def test_class_weights_and_macro_f1():
    weights = class_weights([90, 10], power=1.0)
    assert weights == pytest.approx([100 / 180, 100 / 20])
    assert class_weights([90, 10], power=0.0) == [1.0, 1.0]
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), 2) == pytest.approx(
        (0.8 + 2 / 3) / 2
    )


def test_panel_augmentation_is_deterministic_and_validation_is_fixed():
    vocab = sorted(set(map(str, read_h5ad(KANG, backed="r").var_names)))
    data = load_labelled_tokens([str(KANG)], vocab, min_genes=10)
    common = dict(num_bins=8, target_sum=1e4, max_genes=32, seed=3)
    train = ClassifyExamples(data, np.arange(20), panel_dropout=0.5, **common)
    first, again = train[(0, 0, 5)], train[(0, 0, 5)]
    assert first["genes"].tolist() == again["genes"].tolist()
    assert train[(1, 0, 5)]["genes"].tolist() != first["genes"].tolist()
    assert len(first["genes"]) <= 32 and first["bins"].min() >= 1
    val = ClassifyExamples(data, np.arange(20), train=False, **common)
    assert val[(0, 0, 5)]["genes"].tolist() == val[(4, 0, 5)]["genes"].tolist()


def test_last_k_layers_freezes_the_rest():
    from wensu.model.cell_classifier import CellClassifier
    from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig

    cfg = CellEncoderConfig(vocab_size=20, num_layers=3, d_model=16, num_heads=2, ffn_dim=32)
    classifier = CellClassifier(CellEncoder(cfg), num_classes=3)
    classifier.freeze_below(1)
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("encoder.layers.2.", "encoder.final_layer_norm", "head.")) for n in trainable
    )
    with pytest.raises(ValueError, match="train_layers must be in 0..3"):
        classifier.freeze_below(4)


def test_panel_from_keeps_only_the_genes_a_query_file_measures(tmp_path):
    kang = read_h5ad(KANG)
    vocab = [str(g) for g in kang.var_names]
    full = load_labelled_tokens([str(KANG)], vocab, min_genes=10)
    measured = vocab[::3]  # a query measuring every third gene, cells irrelevant
    query = write_h5ad(tmp_path / "query.h5ad", np.ones((2, len(measured))), measured)
    narrow = load_labelled_tokens([str(KANG)], vocab, min_genes=10, panel_from=[str(query)])
    assert narrow.panel == sorted(set(full.panel) & set(measured))
    assert narrow.report["panel_from"][str(query)]["panel_kept"] == len(narrow.panel)
    allowed = {vocab.index(g) + NUM_SPECIAL for g in narrow.panel}
    assert set(np.concatenate(narrow.tokens.token_ids).tolist()) <= allowed
    few = write_h5ad(tmp_path / "few.h5ad", np.ones((2, 3)), vocab[:3])
    with pytest.raises(CellInputError, match=r"few\.h5ad: only 3 of the .* panel genes"):
        load_labelled_tokens([str(KANG)], vocab, min_genes=10, panel_from=[str(few)])
