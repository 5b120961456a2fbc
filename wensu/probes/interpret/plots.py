"""Figures of the interpretability probe (matplotlib, Agg backend: wensu.probes.common.figures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wensu.probes.common.figures import plt, save_figure


def head_heatmap_png(path: Path, precisions: dict[str, np.ndarray], title: str) -> str:
    """One layers x heads heatmap per model, shared colour scale, value in each cell."""
    vmax = max(float(np.nanmax(p)) for p in precisions.values()) or 1.0
    fig, axes = plt.subplots(1, len(precisions), figsize=(4.2 * len(precisions), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (name, values) in zip(axes, precisions.items(), strict=True):
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        layers, heads = values.shape
        ax.set_xticks(range(heads), [str(h + 1) for h in range(heads)])
        ax.set_yticks(range(layers), [str(layer + 1) for layer in range(layers)])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"{name} (best {np.nanmax(values):.3f})", fontsize=9)
        if layers * heads <= 200:
            for (i, j), v in np.ndenumerate(values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def attention_grid_png(
    path: Path,
    proteins: Sequence[str],
    heads: Sequence[tuple[int, int]],
    maps: Sequence[Sequence[np.ndarray]],
    head_scores: Sequence[float],
) -> str:
    """Rows = proteins, columns = heads: APC-corrected symmetrised attention maps."""
    rows, cols = len(proteins), len(heads)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for r, (name, row_maps) in enumerate(zip(proteins, maps, strict=True)):
        for c, ((layer, head), image) in enumerate(zip(heads, row_maps, strict=True)):
            ax = axes[r][c]
            limit = float(np.abs(image).max()) or 1.0
            ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"L{layer + 1} H{head + 1} (P@L {head_scores[c]:.2f})", fontsize=8)
            if c == 0:
                ax.set_ylabel(name[:24], fontsize=7)
    return save_figure(fig, path)


def lens_curves_png(path: Path, summaries: dict[str, dict[str, list[float]]]) -> str:
    """Per-layer entropy and accuracies (unmasked, masked) for each model."""
    metrics = [
        m
        for m in ("entropy", "accuracy_unmasked", "accuracy_masked")
        if all(m in s for s in summaries.values())
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.0 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, summary in summaries.items():
            ax.plot(range(len(summary[metric])), summary[metric], marker="o", label=name)
        ax.set_xlabel("layer (0 = embedding)")
        ax.set_title(metric.replace("_", " ") + (" (nats)" if metric == "entropy" else ""))
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, path)


def entropy_profile_png(path: Path, name: str, profiles: dict[str, np.ndarray]) -> str:
    """Per-position entropy along one protein, one line per layer; one panel per model."""
    fig, axes = plt.subplots(len(profiles), 1, figsize=(9, 2.6 * len(profiles)), squeeze=False)
    for ax, (model, profile) in zip(axes[:, 0], profiles.items(), strict=True):
        colours = plt.cm.viridis(np.linspace(0, 1, len(profile)))
        for layer, (values, colour) in enumerate(zip(profile, colours, strict=True)):
            ax.plot(np.arange(1, len(values) + 1), values, color=colour, lw=0.8, label=f"{layer}")
        ax.set_ylabel("entropy (nats)")
        ax.set_title(f"{name}: {model}", fontsize=9)
    axes[-1, 0].set_xlabel("residue position")
    axes[0, 0].legend(title="layer", fontsize=6, ncol=2, loc="upper right")
    return save_figure(fig, path)


def embedding_map_png(
    path: Path,
    label_kind: str,
    coords: dict[str, np.ndarray],
    labels: Sequence[str],
    scores: dict[str, dict[str, float]],
    method: str,
    max_legend: int = 20,
) -> str:
    """Scatter of 2-D coordinates coloured by label, one panel per model, scores in titles."""
    classes = sorted(set(labels))
    cmap = plt.cm.tab20 if len(classes) > 10 else plt.cm.tab10
    y = np.asarray(labels)
    fig, axes = plt.subplots(1, len(coords), figsize=(5.0 * len(coords) + 2.5, 4.6))
    axes = np.atleast_1d(axes)
    for ax, (model, xy) in zip(axes, coords.items(), strict=True):
        for k, cls in enumerate(classes):
            at = y == cls
            ax.scatter(xy[at, 0], xy[at, 1], s=8, color=cmap(k % cmap.N), label=cls[:28])
        s = scores[model]
        ax.set_title(
            f"{model}: silhouette {s['silhouette']:.3f}, kNN acc {s['knn_accuracy']:.3f}",
            fontsize=9,
        )
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
    if len(classes) <= max_legend:
        axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"mean embeddings coloured by {label_kind}", fontsize=10)
    return save_figure(fig, path)
