"""2-D maps of mean embeddings and how well they separate a label.

The projection is UMAP when ``umap-learn`` is importable, else PCA (scikit-learn); the numbers
next to the picture are computed in the full embedding space, not in 2-D: the silhouette
score (cosine distance) and the leave-one-out k-nearest-neighbour label accuracy, where
neighbours from the same group (e.g. an AMR gene family of near-identical alleles) are
excluded so that the accuracy measures more than finding a sibling allele.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.util import find_spec

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score


def projection_method(requested: str = "auto") -> str:
    """``umap`` when requested/available (auto), else ``pca``."""
    if requested not in ("auto", "umap", "pca"):
        raise ValueError(f"projection must be auto, umap or pca, got {requested!r}")
    has_umap = find_spec("umap") is not None
    if requested == "umap" and not has_umap:
        raise ValueError("projection=umap needs the umap-learn package (not installed)")
    return "umap" if requested == "umap" or (requested == "auto" and has_umap) else "pca"


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, 2] coordinates of the rows of ``x`` (PCA: sklearn ``PCA(2).fit_transform``)."""
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    return PCA(n_components=2, random_state=seed).fit_transform(x)


def label_silhouette(x: np.ndarray, labels: Sequence[str]) -> float:
    """Silhouette score (cosine) of the labels; NaN with fewer than 2 labels or 1 per label."""
    y = np.asarray(labels)
    if len(set(labels)) < 2 or len(set(labels)) >= len(y):
        return float("nan")
    return float(silhouette_score(x, y, metric="cosine"))


def knn_accuracy(
    x: np.ndarray, labels: Sequence[str], k: int = 5, groups: Sequence[str] | None = None
) -> float:
    """Leave-one-out accuracy of a majority vote of the ``k`` nearest (cosine) neighbours.

    A point's own group (and the point itself) is never among its neighbours; ties go to the
    label of the nearest tied neighbour. NaN when no point has a neighbour.
    """
    y = np.asarray(labels)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    excluded = np.eye(len(y), dtype=bool)
    if groups is not None:
        g = np.asarray(groups)
        excluded |= g[:, None] == g[None, :]
    similarity[excluded] = -np.inf
    correct, scored = 0, 0
    for i in range(len(y)):
        candidates = np.flatnonzero(~excluded[i])
        if not len(candidates):
            continue
        nearest = candidates[np.argsort(-similarity[i, candidates], kind="stable")[:k]]
        votes: dict[str, int] = {}
        for j in nearest:
            votes[y[j]] = votes.get(y[j], 0) + 1
        top = max(votes.values())
        predicted = next(y[j] for j in nearest if votes[y[j]] == top)
        correct += int(predicted == y[i])
        scored += 1
    return correct / scored if scored else float("nan")
