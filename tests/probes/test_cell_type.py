"""cell_type probe: tokenisation and layer/C selection against manual computations, and
`wensu-eval probe=cell_type` on a tiny cell checkpoint (report, figures, bad inputs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import require_shared
from scipy import sparse

from wensu.checkpoint import save_cell_checkpoint, save_encoder_checkpoint
from wensu.model import Encoder, EncoderConfig
from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig
from wensu.probes.cells.baselines import LabelledCells
from wensu.probes.cells.probe import score_embeddings, tokenize

WENSU_EVAL = str(Path(sys.executable).parent / "wensu-eval")
KANG, PBMC3K = "kang2018_ifnb_ctrl_muscat_12261", "pbmc3k_seurat_annotated"
DROPPED = ("CD3E", "LYZ", "MS4A1")  # left out of the vocabulary


def _genes(path: Path) -> list[str]:
    with h5py.File(path, "r") as h5:
        var = h5["var"]
        names = var[var.attrs["_index"]][:]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


@pytest.fixture(scope="module")
def cell_checkpoint(tmp_path_factory):
    folder = require_shared("singlecell")
    genes = set(_genes(folder / f"{KANG}.h5ad")) | set(_genes(folder / f"{PBMC3K}.h5ad"))
    vocab = sorted(genes - set(DROPPED))
    torch.manual_seed(0)
    cfg = CellEncoderConfig(
        vocab_size=len(vocab) + 5,
        num_layers=1,
        d_model=16,
        num_heads=2,
        ffn_dim=32,
        max_genes=64,
    )
    path = tmp_path_factory.mktemp("ckpt") / "cells.ckpt"
    holdout = {"datasets": ["zheng2017_sorted_garnett_800"], "split": "test"}
    return save_cell_checkpoint(CellEncoder(cfg), vocab, path, {"dataset": {"holdout": holdout}})


def test_tokenize_bins_like_preprocessing_and_drops_unknown_genes():
    counts = sparse.csr_matrix(np.array([[3, 0, 1, 6], [0, 2, 0, 0]], dtype=np.int32))
    cells = LabelledCells(
        "toy",
        counts,
        np.array(["A", "B", "C", "D"], dtype=object),
        np.array(["x", "y"], dtype=object),
        np.array(["", ""], dtype=object),
        np.array(["c1", "c2"], dtype=object),
    )
    vocab = {"A": 9, "B": 7, "D": 5}  # C is outside the vocabulary
    tokens = tokenize(
        cells, np.array(["A", "B", "C", "D"]), vocab, num_bins=8, target_sum=1e4, max_genes=1
    )
    # Cell 1: CP10k over all four genes (total 10): A 3000, D 6000 -> log2 bins 12 -> capped 8.
    assert tokens.genes_outside_vocab == 1 and tokens.cells_without_tokens == 0
    assert tokens.genes[0].tolist() == [5] and tokens.bins[0].tolist() == [8]  # top: D (ties->id)
    full = tokenize(
        cells, np.array(["A", "B", "C", "D"]), vocab, num_bins=8, target_sum=10.0, max_genes=10
    )
    # target_sum 10: A -> 3 (bin 1 + floor(log2 4) = 3), D -> 6 (1 + floor(log2 7) = 3).
    assert full.genes[0].tolist() == [5, 9] and full.bins[0].tolist() == [3, 3]
    assert full.genes[1].tolist() == [7] and full.bins[1].tolist() == [1 + 3]


def test_layer_and_C_are_chosen_on_training_cells_only():
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 60, dtype=object)
    signal = np.where(y == "a", 1.0, -1.0)[:, None] + 0.1 * rng.normal(size=(120, 4))
    X = np.stack([rng.normal(size=(120, 4)), signal], axis=1)  # layer 0 noise, layer 1 signal
    result = score_embeddings(X[:80], y[:80], X[80:], y[80:], Cs=[0.1, 1.0])
    assert result["layer"] == 1 and result["accuracy"] == 1.0 and result["macro_f1"] == 1.0
    merged = score_embeddings(X[:80], y[:80], X[80:], y[80:], merge={"a": "b"}, layers=[-1])
    # Test cells of class "a" cannot be scored after merging a -> b: left out and counted.
    assert merged["predicted"] == ["b"] * 20 and merged["n_test_excluded_unseen_class"] == 20
    assert merged["layer"] == 1


def _eval(args, cwd):
    return subprocess.run([WENSU_EVAL, *args], cwd=cwd, capture_output=True, text=True)


def test_eval_cli_fast_writes_table_figures_and_exposure(cell_checkpoint, tmp_path):
    data_dir = require_shared("singlecell").parent
    result = _eval(
        [
            f"checkpoint={cell_checkpoint}",
            "probe=cell_type",
            "subset=fast",
            "output=out",
            f"data_dir={data_dir}",
            "progress=false",
            "probe.cell_type.fast.max_cells_per_file=100",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "cell_type" / "metrics.json").read_text())
    tasks = {row["task"] for row in payload["rows"]}
    assert tasks == {
        "cross: zheng2017_sorted_garnett_800",
        f"within: {KANG} 80%/20%",
        f"held-out donor: {KANG} (2 folds pooled)",
    }
    for row in payload["rows"]:
        assert list(row["values"]) == ["model", "random-init", "LR-HVG", "LR-PCA"]
        assert all(0.0 <= v <= 1.0 for v in row["values"].values())
    cross = payload["details"]["tasks"]["cross: zheng2017_sorted_garnett_800"]
    assert cross["genes_train_embedding"] == 1280 and cross["model"]["n"] == 100
    folder = require_shared("singlecell")
    shared = set(_genes(folder / f"{KANG}.h5ad")) & set(_genes(folder / f"{PBMC3K}.h5ad"))
    dropped = len(set(DROPPED) & shared)
    assert dropped > 0
    assert payload["details"]["genes_outside_vocab"][f"{KANG} (1280 genes)"] == dropped
    assert "did not see the expression of the cross-dataset test files" in payload["notes"][0]
    for figure in payload["figures"]:
        assert (tmp_path / "out" / figure).read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| task | metric | model | random-init | LR-HVG | LR-PCA |" in report


def _error(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_bad_inputs_are_one_line_errors(cell_checkpoint, tmp_path):
    data_dir = require_shared("singlecell").parent
    protein = save_encoder_checkpoint(
        Encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=8)),
        tmp_path / "protein.ckpt",
    )
    line = _error(
        _eval([f"checkpoint={protein}", "probe=cell_type", f"data_dir={data_dir}"], tmp_path)
    )
    assert "needs a cell-model checkpoint" in line and "protein model checkpoint" in line
    line = _error(_eval([f"checkpoint={cell_checkpoint}", "probe=ss"], tmp_path))
    assert "need a protein checkpoint" in line and "cell model" in line
    line = _error(
        _eval(
            [
                f"checkpoint={cell_checkpoint}",
                "probe=cell_type",
                "subset=fast",
                f"data_dir={data_dir}",
                "probe.cell_type.label_column=no_such_column",
            ],
            tmp_path,
        )
    )
    assert f"{KANG}.h5ad" in line and "no_such_column" in line
