"""Shared pieces of the cell fine-tuning and annotation tests: the committed real cuts
(tests/data/cells, see its SOURCES.md), a tiny pretrained cell checkpoint over their genes and a
classifier checkpoint built without training."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import torch

from wensu.checkpoint import lightning_checkpoint, save_atomic, save_cell_checkpoint
from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig

CUTS = Path(__file__).resolve().parents[1] / "data" / "cells"
KANG = CUTS / "kang_ctrl_cut.h5ad"  # 319 cells x 1,287 genes, 8 classes, 3 donors
PBMC3K = CUTS / "pbmc3k_cut.h5ad"  # 224 cells x 3,000 genes, 8 classes, no donors
TINY = {"num_layers": 1, "d_model": 16, "num_heads": 2, "ffn_dim": 32, "max_genes": 64}


def cut_genes() -> list[str]:
    genes = set()
    for path in (KANG, PBMC3K):
        genes |= set(map(str, ad.read_h5ad(path, backed="r").var_names))
    return sorted(genes)


def tiny_pretrained(path: Path, seed: int = 0) -> Path:
    """A cell-encoder checkpoint (random weights) whose vocabulary holds the cuts' genes."""
    torch.manual_seed(seed)
    vocab = cut_genes()
    cfg = CellEncoderConfig(vocab_size=len(vocab) + 5, num_bins=9, **TINY)
    binning = {"target_sum": 1e4, "num_bins": 8}
    return save_cell_checkpoint(CellEncoder(cfg), vocab, path, {"dataset": {"binning": binning}})


def tiny_classifier(path: Path, classes: list[str] | None = None, seed: int = 0) -> Path:
    """A cell-type classifier checkpoint (untrained) over the genes of both cuts."""
    from wensu.train.cell_finetune import CellClassifierModule

    torch.manual_seed(seed)
    vocab = cut_genes()
    classes = classes or ["B", "CD14 Mono", "CD4 T", "NK"]
    model = dict(vocab_size=len(vocab) + 5, num_bins=9, **TINY)
    module = CellClassifierModule(
        model=model,
        vocab=vocab,
        classes=classes,
        panel=vocab,
        tokens={"num_bins": 8, "target_sum": 1e4, "max_genes": 64},
        class_weight=[1.0] * len(classes),
    )
    checkpoint = lightning_checkpoint(module.model, dict(module.hparams))
    save_atomic(checkpoint, path)
    return path


def write_h5ad(path: Path, X, var_names, obs=None, var=None) -> Path:
    """An .h5ad from parts (obs names c0, c1, ...)."""
    import pandas as pd

    n = X.shape[0]
    obs = pd.DataFrame(obs or {}, index=[f"c{i}" for i in range(n)])
    var = pd.DataFrame(var or {}, index=list(var_names))
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(path)
    return path


def load_cut(path: Path = PBMC3K) -> ad.AnnData:
    return ad.read_h5ad(path)


def proba_of(output: Path) -> np.ndarray:
    return np.asarray(ad.read_h5ad(output).obsm["wensu_proba"])
