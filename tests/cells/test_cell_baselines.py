"""Cell-type baselines: HVG selection against a pandas transcription of scanpy's rule, metrics
against hand counts, a separable set scored perfectly, and a real pbmc3k subset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import require_shared
from scipy import sparse
from threadpoolctl import threadpool_limits
from wensu.preprocessing.cells.writer import SplitRouter

from wensu.probes.cells.baselines import (
    LabelledCells,
    classification_metrics,
    common_genes,
    confusion_grid_png,
    evaluate_split,
    highly_variable_genes,
    load_labelled,
    log1p_cp10k,
)


def _cells(name, counts, labels, genes=None):
    genes = np.array(genes or [f"G{i}" for i in range(counts.shape[1])], dtype=object)
    n = counts.shape[0]
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    return LabelledCells(
        name,
        sparse.csr_matrix(counts),
        genes,
        np.asarray(labels, dtype=object),
        np.full(n, "", object),
        ids,
    )


def _scanpy_seurat_reference(log_norm: np.ndarray, n_top: int) -> np.ndarray:
    """scanpy's flavor='seurat' steps written with pandas (pd.cut, groupby)."""
    X = np.expm1(log_norm)
    mean = X.mean(axis=0)
    var = X.var(axis=0, ddof=1)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": np.log(dispersion)})
    frame["bin"] = pd.cut(frame["means"], bins=20)
    grouped = frame.groupby("bin", observed=False)["dispersions"]
    mean_bin, std_bin = grouped.mean(), grouped.std(ddof=1)
    single = std_bin.isnull()
    std_bin[single] = mean_bin[single]
    mean_bin[single] = 0
    norm = (frame["dispersions"].to_numpy() - mean_bin[frame["bin"]].to_numpy()) / std_bin[
        frame["bin"]
    ].to_numpy()
    return np.sort(np.argsort(-np.nan_to_num(norm, nan=-np.inf), kind="stable")[:n_top])


def test_hvg_matches_scanpy_rule():
    rng = np.random.default_rng(0)
    rates = rng.gamma(0.6, 2.0, size=300)
    counts = rng.poisson(rates * rng.gamma(2.0, 1.0, size=(400, 1)))
    counts[:, :30] *= rng.integers(0, 6, size=(400, 1))  # a block of over-dispersed genes
    log_norm = log1p_cp10k(sparse.csr_matrix(counts))
    selected = highly_variable_genes(log_norm, n_top=50)
    reference = _scanpy_seurat_reference(log_norm.toarray(), 50)
    np.testing.assert_array_equal(selected, reference)
    assert len(set(selected) & set(range(30))) >= 25
    assert highly_variable_genes(log_norm, n_top=500).tolist() == list(range(300))


def test_log1p_cp10k_by_hand():
    out = log1p_cp10k(sparse.csr_matrix(np.array([[1, 3, 0], [0, 0, 0]])))
    np.testing.assert_allclose(out.toarray(), [[np.log1p(2500), np.log1p(7500), 0], [0, 0, 0]])


def test_metrics_by_hand():
    truth = np.array(["a", "a", "a", "b", "b", "c"])
    predicted = np.array(["a", "a", "b", "b", "x", "c"])
    metrics = classification_metrics(truth, predicted)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # F1: a = 2*1*(2/3)/(1+2/3) = 0.8; b = 2*(1/2)*(1/2)/1 = 0.5; c = 1
    assert metrics["per_class_f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 1.0})
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert metrics["predicted_columns"] == ["a", "b", "c", "x"]
    assert metrics["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]


def _separable(seed, n=60):
    rng = np.random.default_rng(seed)
    labels = np.array(["T", "B", "Mono"] * (n // 3), dtype=object)
    counts = rng.poisson(1.0, size=(n, 40))
    for k, label in enumerate(("T", "B", "Mono")):
        counts[labels == label, k * 10 : k * 10 + 5] += 40
    return counts, labels


def test_separable_set_scores_one(tmp_path):
    train = _cells("train", *_separable(0))
    test = _cells("test", *_separable(1))
    with threadpool_limits(1):
        result = evaluate_split(train, test, n_hvg=40, n_pcs=2, Cs=(0.1, 1.0))
    for features in ("hvg", "pca"):
        assert result[features]["accuracy"] == 1.0 and result[features]["macro_f1"] == 1.0
    assert result["genes_used"] == 40 and result["n_test"] == 60
    # Coarser test labels: predicted B/T merged into "Lymph"; an unseen test class is left out.
    labels = np.where(test.labels == "Mono", "Mono", "Lymph").astype(object)
    labels[:3] = "Unseen"
    coarse = _cells("coarse", test.counts, labels)
    with threadpool_limits(1):
        merged = evaluate_split(
            train, coarse, n_hvg=20, features=("hvg",), merge={"T": "Lymph", "B": "Lymph"}
        )
    assert merged["hvg"]["accuracy"] == 1.0 and merged["n_test_excluded_unseen_class"] == 3
    assert merged["hvg"]["classes"] == ["Lymph", "Mono"]
    png = confusion_grid_png(
        tmp_path / "confusion.png", [("sep", result["hvg"]), ("merged", merged["hvg"])]
    )
    assert png.stat().st_size > 1000


def test_pca_with_fewer_training_cells_than_components():
    # 30 training cells: the 80% fit split has 24 rows, so PCA is capped at 23 components.
    train = _cells("train", *_separable(0, n=30))
    test = _cells("test", *_separable(1))
    with threadpool_limits(1):
        result = evaluate_split(train, test, n_hvg=40, n_pcs=50, features=("pca",), Cs=(1.0,))
    assert result["pca"]["accuracy"] == 1.0


def test_real_pbmc3k_subset():
    cells = load_labelled(
        require_shared("singlecell/pbmc3k_seurat_annotated.h5ad"), "cell_type_coarse"
    )
    assert cells.labels.size == 2638 and set(cells.labels) >= {"B", "CD4 T", "NK", "Platelet"}
    split = SplitRouter({"train": 0.3, "valid": 0.55, "test": 0.15}, 0)(
        cells.name, cells.cell_ids, cells.donors
    )
    train, test = cells.subset(split == "train"), cells.subset(split == "test")
    assert common_genes(train, test).size == 13714
    with threadpool_limits(1):
        result = evaluate_split(train, test, n_hvg=2000, n_pcs=50, Cs=(1.0,))
    for features in ("hvg", "pca"):
        metrics = result[features]
        confusion = np.array(metrics["confusion"])
        assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
        assert metrics["accuracy"] > 0.9
        assert metrics["per_class_f1"]["B"] > 0.9 and metrics["per_class_f1"]["NK"] > 0.8
    assert result["genes_used"] == 2000 and result["n_train"] == train.labels.size


def test_unknown_labels_are_left_out():
    cells = load_labelled(
        require_shared("singlecell/pbmc4k_10x_soupx_2170.h5ad"), "cell_type_coarse"
    )
    assert cells.labels.size == 2170 - 20 and "Unknown" not in set(cells.labels)
