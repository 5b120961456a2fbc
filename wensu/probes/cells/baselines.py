"""Honest cell-type baselines: logistic regression on log1p(CP10k) of highly variable genes,
and on their first 50 principal components. Any learned cell embedding has to beat these.

Protocol (everything fitted on training cells only): the genes are those measured by every
training file and the test file (intersection); CP10k is computed over exactly those genes, so
files with whole-transcriptome and variable-genes-only panels are normalised alike; the top
``n_hvg`` genes are chosen by scanpy's ``seurat`` dispersion rule (reimplemented with numpy, no
scanpy dependency); features are standardised (PCA: standardise -> PCA -> standardise), and the
L2 strength C is picked by macro-F1 on a stratified validation split of the training cells,
then refitted on all of them. Test cells whose true class never occurs in training are left
out (and counted); ``merge`` maps predicted classes onto a coarser test label set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from wensu.data.cell_binning import normalise_total
from wensu.data.cell_inputs import CellFileSpec, read_cell_file

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
UNUSABLE_LABELS = ("", "nan", "Unknown")


@dataclass
class LabelledCells:
    """Raw counts of labelled cells: ``counts`` (cells x ``genes``, CSR), ``labels``,
    ``donors`` ("" = unknown), ``cell_ids`` and a ``name``."""

    name: str
    counts: sparse.csr_matrix
    genes: np.ndarray
    labels: np.ndarray
    donors: np.ndarray
    cell_ids: np.ndarray

    def subset(self, mask: np.ndarray, name: str | None = None) -> LabelledCells:
        index = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return LabelledCells(
            name or self.name,
            self.counts[index],
            self.genes,
            self.labels[index],
            self.donors[index],
            self.cell_ids[index],
        )

    def restrict(self, genes: np.ndarray) -> sparse.csr_matrix:
        """Counts over ``genes`` (all must be measured here), in that order."""
        position = {g: i for i, g in enumerate(self.genes)}
        return self.counts[:, [position[g] for g in genes]].tocsr()


def load_labelled(
    path: str | Path,
    label_column: str = "cell_type_coarse",
    *,
    drop_flags: Sequence[str] = (),
    gene_column: str | None = None,
) -> LabelledCells:
    """Cells of one .h5ad with a usable label (not empty/"Unknown"); ``drop_flags`` names obs
    bool columns whose True cells are left out (e.g. cells duplicated in another test file).
    ``gene_column`` names the ``var`` column of gene ids (symbols, or Ensembl ids with a symbol
    column; default ``var_names``). Read and checked by :func:`wensu.data.cell_inputs.
    read_cell_file` (raw counts or log-normalised values; errors name the file)."""
    import anndata

    cells = read_cell_file(CellFileSpec(Path(path), label_column), gene_column=gene_column)
    keep = ~np.isin(cells.labels, UNUSABLE_LABELS)
    if drop_flags:
        obs = anndata.read_h5ad(path, backed="r").obs
        for flag in drop_flags:
            if flag in obs:
                keep &= ~obs[flag].fillna(False).astype(bool).to_numpy()
    return LabelledCells(
        cells.name,
        cells.values[keep].tocsr(),
        cells.genes,
        cells.labels[keep],
        cells.donors[keep],
        cells.cell_ids[keep],
    )


def concat(parts: Sequence[LabelledCells], name: str) -> LabelledCells:
    """Pool cells of several files over the genes they all measure."""
    genes = common_genes(*parts)
    return LabelledCells(
        name,
        sparse.vstack([p.restrict(genes) for p in parts], format="csr"),
        genes,
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.donors for p in parts]),
        np.concatenate([[f"{p.name}/{c}" for c in p.cell_ids] for p in parts]),
    )


def common_genes(*parts: LabelledCells) -> np.ndarray:
    """Sorted gene symbols measured in every part."""
    genes = parts[0].genes
    for part in parts[1:]:
        genes = np.intersect1d(genes, part.genes)
    return np.sort(np.asarray(genes, dtype=object))


def log1p_cp10k(counts: sparse.spmatrix, target_sum: float = 1e4) -> sparse.csr_matrix:
    """``log1p(count / cell total * target_sum)`` (natural log), totals over the given genes."""
    out = normalise_total(sparse.csr_matrix(counts), target_sum)
    out.data = np.log1p(out.data)
    return out


def highly_variable_genes(
    log_norm: sparse.spmatrix, n_top: int = 2000, n_bins: int = 20
) -> np.ndarray:
    """Column indices (ascending) of the ``n_top`` most variable genes, scanpy ``seurat`` rule:
    dispersion var/mean of expm1 values, log'd, z-scored within 20 equal-width bins of log1p
    mean; exactly ``n_top`` taken (ties by column). All genes when there are no more than n_top."""
    X = sparse.csr_matrix(log_norm, dtype=np.float64).copy()
    n_cells, n_genes = X.shape
    if n_genes <= n_top:
        return np.arange(n_genes)
    X.data = np.expm1(X.data)
    mean = np.asarray(X.mean(axis=0)).ravel()
    var = (np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean**2) * n_cells / max(n_cells - 1, 1)
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        dispersion[dispersion <= 0] = np.nan
        dispersion = np.log(dispersion)
    log_mean = np.log1p(mean)
    edges = np.linspace(log_mean.min(), log_mean.max(), n_bins + 1)
    bins = np.clip(np.searchsorted(edges, log_mean, side="left") - 1, 0, n_bins - 1)
    normalised = np.full(n_genes, np.nan)
    for b in np.unique(bins):
        members = (bins == b) & ~np.isnan(dispersion)
        values = dispersion[members]
        if values.size == 0:
            continue
        if values.size == 1:  # scanpy: a lone gene in its bin gets normalised dispersion 1
            normalised[members] = 1.0
            continue
        std = values.std(ddof=1)
        normalised[members] = (values - values.mean()) / std if std > 0 else 0.0
    score = np.where(np.isnan(normalised), -np.inf, normalised)
    return np.sort(np.argsort(-score, kind="stable")[:n_top])


def make_model(features: str, *, C: float, seed: int, n_pcs: int = 50) -> Pipeline:
    """``hvg``: standardise -> logistic regression; ``pca``: standardise -> PCA -> standardise ->
    logistic regression."""
    logistic = LogisticRegression(C=C, max_iter=500, tol=1e-3, random_state=seed)
    if features == "hvg":
        return make_pipeline(StandardScaler(), logistic)
    if features == "pca":
        pca = PCA(n_components=n_pcs, random_state=seed, svd_solver="randomized")
        return make_pipeline(StandardScaler(), pca, StandardScaler(), logistic)
    raise ValueError(f"features must be 'hvg' or 'pca', got {features!r}")


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    features: str = "hvg",
    *,
    seed: int = 0,
    Cs: Sequence[float] = DEFAULT_CS,
    val_fraction: float = 0.2,
    n_pcs: int = 50,
) -> tuple[Pipeline, dict]:
    """Pick C by validation macro-F1 on a stratified split of the training data, refit on all
    of it; returns the model and ``{"C": best, "val_macro_f1": {C: score}}``."""
    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= 2 else None
    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    # Capped by the fit split, the smaller of the two fits (PCA needs n_pcs < rows).
    n_pcs = min(n_pcs, X.shape[1], X_fit.shape[0] - 1)
    scores = {}
    for C in Cs:
        model = make_model(features, C=C, seed=seed, n_pcs=n_pcs).fit(X_fit, y_fit)
        scores[float(C)] = float(f1_score(y_val, model.predict(X_val), average="macro"))
    best = max(scores, key=lambda c: (scores[c], -c))
    return make_model(features, C=best, seed=seed, n_pcs=n_pcs).fit(X, y), {
        "C": best,
        "val_macro_f1": scores,
    }


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str] | None = None
) -> dict:
    """Accuracy, macro-F1 (over the true classes present), per-class F1 and the confusion
    matrix (rows = true ``classes``, columns = the same classes then any other prediction)."""
    classes = list(classes) if classes is not None else sorted(set(y_true))
    extra = sorted(set(y_pred) - set(classes))
    columns = classes + extra
    per_class = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=columns)[: len(classes)]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
        ),
        "per_class_f1": {c: float(f) for c, f in zip(classes, per_class, strict=True)},
        "classes": classes,
        "predicted_columns": columns,
        "confusion": matrix.tolist(),
    }


def evaluate_split(
    train: LabelledCells,
    test: LabelledCells,
    *,
    n_hvg: int = 2000,
    n_pcs: int = 50,
    seed: int = 0,
    features: Sequence[str] = ("hvg", "pca"),
    merge: Mapping[str, str] | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    return_predictions: bool = False,
) -> dict:
    """Fit on ``train``, score on ``test`` for each feature set (see the module docstring).
    With ``return_predictions`` each feature set's result also holds ``truth`` and
    ``predicted`` (lists, the scored test cells in order)."""
    genes = common_genes(train, test)
    X_train_all = log1p_cp10k(train.restrict(genes))
    hvg = highly_variable_genes(X_train_all, n_hvg)
    X_train = X_train_all[:, hvg].toarray().astype(np.float32)
    X_test = log1p_cp10k(test.restrict(genes))[:, hvg].toarray().astype(np.float32)
    merge = dict(merge or {})
    seen = {merge.get(c, c) for c in np.unique(train.labels)}
    usable = np.isin(test.labels, list(seen))
    result = {
        "train": train.name,
        "test": test.name,
        "n_train": int(train.labels.size),
        "n_test": int(usable.sum()),
        "n_test_excluded_unseen_class": int((~usable).sum()),
        "excluded_classes": sorted(set(test.labels[~usable])),
        "genes_shared": int(genes.size),
        "genes_used": int(hvg.size),
        "merge": merge,
    }
    for name in features:
        model, selection = fit_probe(X_train, train.labels, name, seed=seed, n_pcs=n_pcs, Cs=Cs)
        predicted = np.array([merge.get(p, p) for p in model.predict(X_test[usable])], dtype=object)
        truth = test.labels[usable]
        metrics = classification_metrics(truth, predicted, sorted(set(truth)))
        result[name] = {**metrics, **selection}
        if return_predictions:
            result[name].update(truth=truth.tolist(), predicted=predicted.tolist())
    return result


def confusion_grid_png(path: str | Path, panels: Sequence[tuple[str, dict]]) -> Path:
    """Row-normalised confusion matrices (rows = true class, columns = predicted), one panel
    per ``(title, metrics)`` with ``metrics`` from :func:`classification_metrics`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (title, metrics) in zip(axes.ravel(), panels, strict=False):
        matrix = np.asarray(metrics["confusion"], dtype=float)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(
            range(matrix.shape[1]),
            metrics["predicted_columns"],
            rotation=60,
            ha="right",
            fontsize=7,
        )
        ax.set_yticks(range(matrix.shape[0]), metrics["classes"], fontsize=7)
        for i, j in zip(*np.nonzero(matrix), strict=True):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=6, color=colour)
        ax.set_title(
            f"{title}\nacc {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
            fontsize=8,
        )
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
