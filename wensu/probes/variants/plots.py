"""Figures of the variant-effect probe (matplotlib, Agg backend): per-set Spearman bars, a
predicted-vs-measured scatter and a position x amino-acid heatmap (predicted beside measured)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wensu.probes.common.figures import plt, save_figure
from wensu.probes.variants.data import AMINO_ACIDS, VariantSet


def _save(fig, path: Path) -> str:
    """Write the figure; return its file name (callers prefix their folder)."""
    save_figure(fig, path)
    return path.name


def spearman_bars_png(
    path: Path, per_set: Mapping[str, Mapping[str, Mapping[str, float]]], columns: Sequence[str]
) -> str:
    """Grouped bars: Spearman per set (x) and scorer (colour)."""
    names = list(per_set)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(names) + 2), 4.2))
    for k, column in enumerate(columns):
        values = [per_set[n][column]["spearman"] for n in names]
        ax.bar(np.arange(len(names)) + k * width, np.nan_to_num(values), width, label=column)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=60, ha="right")
    ax.set_ylabel("Spearman (predicted vs measured)")
    ax.set_title("Zero-shot variant effects per DMS set")
    ax.legend(fontsize=8)
    return _save(fig, path)


def scatter_png(
    path: Path,
    set_name: str,
    measured: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    spearmans: Mapping[str, float],
) -> str:
    """One panel per scorer: predicted score (x) vs measured fitness (y)."""
    fig, axes = plt.subplots(
        1, len(predictions), figsize=(3.6 * len(predictions), 3.6), squeeze=False
    )
    for ax, (name, predicted) in zip(axes[0], predictions.items(), strict=True):
        ax.scatter(predicted, measured, s=5, alpha=0.4, linewidths=0)
        ax.set_title(f"{name}\nSpearman {spearmans[name]:.3f}", fontsize=9)
        ax.set_xlabel("predicted score")
    axes[0][0].set_ylabel(f"measured fitness ({set_name})")
    return _save(fig, path)


def _measured_matrix(variant_set: VariantSet, positions: Sequence[int]) -> np.ndarray:
    """[20, P] measured single-substitution scores (NaN where not measured)."""
    column = {p: j for j, p in enumerate(positions)}
    matrix = np.full((len(AMINO_ACIDS), len(positions)), np.nan)
    for mutant, score in zip(variant_set.mutants, variant_set.scores, strict=True):
        if len(mutant) == 1 and mutant[0].position in column:
            matrix[AMINO_ACIDS.index(mutant[0].mutant), column[mutant[0].position]] = score
    return matrix


def _panel(ax, matrix: np.ndarray, positions: Sequence[int], wild_type: str, title: str):
    finite = matrix[np.isfinite(matrix)]
    low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        aspect="auto",
        cmap=cmap,
        vmin=low,
        vmax=high,
        interpolation="nearest",
    )
    rows = [AMINO_ACIDS.index(a) for a in wild_type]
    ax.scatter(np.arange(len(positions)), rows, s=6, c="red", marker="s", linewidths=0)
    ax.set_yticks(np.arange(len(AMINO_ACIDS)), list(AMINO_ACIDS), fontsize=6)
    step = max(1, len(positions) // 20)
    ticks = np.arange(0, len(positions), step)
    ax.set_xticks(ticks, [positions[i] for i in ticks], fontsize=7, rotation=90)
    ax.set_title(title, fontsize=9)
    return image


def heatmap_png(
    path: Path,
    measured: VariantSet,
    positions: Sequence[int],
    predicted: np.ndarray,
    predicted_label: str,
) -> str:
    """Predicted landscape ([P, 20], every substitution) above the measured one (grey = not
    measured); red squares mark the wild-type residue. Columns are sequence positions."""
    info = measured.info
    wild_type = "".join(info.sequence[p - info.offset] for p in positions)
    width = min(40.0, max(8.0, 0.06 * len(positions) + 3))
    fig, axes = plt.subplots(2, 1, figsize=(width, 7.5), sharex=True)
    panels = (
        (predicted.T, f"predicted: {predicted_label}"),
        (
            _measured_matrix(measured, positions),
            f"measured: {info.name} ({len(measured)} variants)",
        ),
    )
    for ax, (matrix, title) in zip(axes, panels, strict=True):
        image = _panel(ax, matrix, positions, wild_type, title)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    axes[1].set_xlabel(f"position ({info.protein}, numbering of the set's mutant names)")
    return _save(fig, path)
