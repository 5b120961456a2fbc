"""Cell-type probe helpers: raw counts -> cell tokens -> frozen cell embeddings -> LR, plus plots.

Cells are tokenised exactly as preprocessing does (CP10k over the genes the task uses, then
``bin = 1 + min(floor(log2(1 + cp10k)), num_bins - 1)`` for expressed genes only), restricted to
the checkpoint's vocabulary (genes outside it are dropped and counted; genes a file does not
measure are absent, not zero), ordered by token id, and cut to the ``max_genes`` most expressed
(:func:`wensu.model.cell_encoder.select_genes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wensu.data.cell_binning import expression_bins, normalise_total
from wensu.data.collate import collate_tokens
from wensu.model.cell_encoder import PAD_IDX, CellEncoder, select_genes
from wensu.probes.cells.baselines import (
    DEFAULT_CS,
    LabelledCells,
    classification_metrics,
    fit_probe,
)


@dataclass
class CellTokens:
    """Per-cell token arrays and what tokenisation dropped."""

    genes: list[np.ndarray]
    bins: list[np.ndarray]
    genes_outside_vocab: int  # task genes the checkpoint's vocabulary lacks
    cells_without_tokens: int  # cells left with no expressed in-vocabulary gene


def tokenize(
    cells: LabelledCells,
    genes: np.ndarray,
    vocab_ids: dict[str, int],
    *,
    num_bins: int,
    target_sum: float,
    max_genes: int,
) -> CellTokens:
    """Tokens of ``cells`` over ``genes`` (all measured by them); ``num_bins`` is the
    preprocessing bin count (the model's ``num_bins`` - 1)."""
    normalised = normalise_total(cells.restrict(genes), target_sum)
    ids = np.array([vocab_ids.get(g, -1) for g in genes], dtype=np.int64)
    inside = ids >= 0
    normalised = normalised[:, np.flatnonzero(inside)].tocsr()
    normalised.eliminate_zeros()
    column_ids = ids[inside]
    out_genes, out_bins, empty = [], [], 0
    for row in range(normalised.shape[0]):
        lo, hi = normalised.indptr[row], normalised.indptr[row + 1]
        token_ids = column_ids[normalised.indices[lo:hi]]
        bins = expression_bins(normalised.data[lo:hi], num_bins).astype(np.int64)
        order = np.argsort(token_ids, kind="stable")
        chosen = select_genes(token_ids[order], bins[order], max_genes)
        empty += int(len(chosen[0]) == 0)
        out_genes.append(chosen[0])
        out_bins.append(chosen[1])
    return CellTokens(out_genes, out_bins, int((~inside).sum()), empty)


@torch.inference_mode()
def embed_tokens(
    encoder: CellEncoder,
    tokens: CellTokens,
    *,
    max_tokens: int = 8192,
    device: str = "cpu",
) -> np.ndarray:
    """Mean-pooled hidden states of every layer [cells, num_layers + 1, d] (float32; the last
    is the final hidden state), batched by a token budget over cells sorted by length (results
    in the input order). A cell without tokens gets zeros."""
    encoder = encoder.to(device).eval()
    n = len(tokens.genes)
    out = np.zeros((n, encoder.cfg.num_layers + 1, encoder.cfg.d_model), dtype=np.float32)
    lengths = np.array([len(g) for g in tokens.genes])
    order = [i for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        stop = start + max(1, max_tokens // max(longest, 1))
        batch = order[start:stop]
        genes = collate_tokens([tokens.genes[i] for i in batch], PAD_IDX).to(device)
        bins = collate_tokens([tokens.bins[i] for i in batch], 0).to(device)
        embedding = encoder.cell_embedding(genes, bins, genes.eq(PAD_IDX), all_layers=True)
        out[batch] = embedding.float().cpu().numpy()
        start = stop
    return out


def score_embeddings(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    merge: dict[str, str] | None = None,
    seed: int = 0,
    Cs: Sequence[float] = DEFAULT_CS,
    layers: Sequence[int] | None = None,
) -> dict:
    """Standardise -> logistic regression on the training embeddings, the layer (axis 1 of
    ``X_*`` [cells, layers, d]; ``layers`` restricts the candidates) and C both picked by
    macro-F1 on a stratified 20% validation split of the *training* cells (as the LR baselines
    pick C); metrics on the test cells whose class training has (after ``merge``)."""
    merge = dict(merge or {})
    seen = {merge.get(c, c) for c in np.unique(y_train)}
    usable = np.isin(y_test, list(seen))
    candidates = (
        range(X_train.shape[1]) if layers is None else [l % X_train.shape[1] for l in layers]
    )
    best = None
    for layer in candidates:
        model, selection = fit_probe(X_train[:, layer], y_train, "hvg", seed=seed, Cs=Cs)
        score = max(selection["val_macro_f1"].values())
        if best is None or score > best[0]:
            best = (score, layer, model, selection)
    _, layer, model, selection = best
    X_test = X_test[usable][:, layer]
    predicted = np.array([merge.get(p, p) for p in model.predict(X_test)], dtype=object)
    truth = y_test[usable]
    metrics = classification_metrics(truth, predicted, sorted(set(truth)))
    return {
        **metrics,
        **selection,
        "layer": int(layer),
        "n_test_excluded_unseen_class": int((~usable).sum()),
        "truth": truth.tolist(),
        "predicted": predicted.tolist(),
    }


def embedding_png(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    seed: int = 0,
) -> tuple[Path, str]:
    """2-D map of embeddings coloured by cell type, one panel per ``(title, X, labels)``.
    UMAP when ``umap-learn`` is installed, else the first two principal components; returns
    the path and the method used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    try:
        import umap

        method = "UMAP"
    except ImportError:
        umap, method = None, "PCA"
    classes = sorted({str(c) for _, _, labels in panels for c in labels})
    colours = {
        c: plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")(i)
        for i, c in enumerate(classes)
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False)
    for ax, (title, X, labels) in zip(axes[0], panels, strict=True):
        Z = StandardScaler().fit_transform(X)
        if umap is not None:
            Z = umap.UMAP(random_state=seed).fit_transform(Z)
        else:
            Z = PCA(n_components=2, random_state=seed).fit_transform(Z)
        for c in classes:
            pick = np.asarray(labels) == c
            if pick.any():
                ax.scatter(Z[pick, 0], Z[pick, 1], s=3, color=colours[c], label=c, alpha=0.7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method} 1", fontsize=8)
        ax.set_ylabel(f"{method} 2", fontsize=8)
    axes[0][-1].legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, method


def stable_cell_subset(cells: LabelledCells, limit: int | None) -> LabelledCells:
    """At most ``limit`` cells, a fixed pseudo-random subset by CRC32 of the cell id."""
    import zlib

    if limit is None or len(cells.cell_ids) <= limit:
        return cells
    keys = np.array([zlib.crc32(f"{cells.name}/{c}".encode()) for c in cells.cell_ids])
    keep = np.sort(np.argsort(keys, kind="stable")[:limit])
    return cells.subset(keep)
