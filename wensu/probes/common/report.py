"""Evaluation outputs: per-probe ``metrics.json``, the run's ``report.md`` and PNG figures
(matplotlib, Agg backend, so no display is needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from wensu.probes.common.figures import plt
from wensu.probes.common.figures import save_figure as _save


def ss_accuracy_png(path: Path, scores: dict, display: dict[str, str]) -> str:
    """Grouped bars: accuracy per test set and feature set; one panel per (states, head)."""
    panels = sorted({(s, h) for s, _, h in scores})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (states, head) in zip(axes[0], panels, strict=True):
        tests = [t for s, t, h in scores if (s, h) == (states, head)]
        features = list(scores[(states, tests[0], head)])
        width = 0.8 / len(features)
        for k, feature in enumerate(features):
            values = [scores[(states, t, head)][feature]["accuracy"] for t in tests]
            ax.bar(np.arange(len(tests)) + k * width, values, width, label=feature)
        ax.set_xticks(
            np.arange(len(tests)) + 0.4 - width / 2, [display[t] for t in tests], rotation=30
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"SS{states}, {head} head")
        ax.set_ylabel(f"Q{states}")
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def contact_map_png(
    path: Path, name: str, true_contacts: np.ndarray, predicted: dict[str, np.ndarray]
) -> str:
    """One panel per model: predicted probabilities (upper triangle, scaled to the panel's
    maximum so weak predictors stay visible) vs. true contacts (lower)."""
    fig, axes = plt.subplots(1, len(predicted), figsize=(4.2 * len(predicted), 4.2), squeeze=False)
    lower = np.tril(np.ones_like(true_contacts, dtype=bool), -1)
    for ax, (model, scores) in zip(axes[0], predicted.items(), strict=True):
        upper = np.triu(scores, 1)
        image = np.where(lower, true_contacts.astype(float), upper / max(float(upper.max()), 1e-12))
        ax.imshow(image, cmap="Greys", vmin=0, vmax=1)
        title = f"{name}: {model} (max p = {upper.max():.2f})\nupper = predicted, lower = true"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def confusion_png(
    path: Path, confusion: Sequence[Sequence[int]], classes: list[str], title: str
) -> str:
    """Row-normalised confusion matrix (rows = true class) with counts in the cells."""
    matrix = np.asarray(confusion, dtype=float)
    normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 1.0 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 2, size))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [c[:18] for c in classes], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [c[:18] for c in classes], fontsize=7)
    for i in ticks:
        for j in ticks:
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if normalised[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return "–" if value is None else str(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row["values"] if c not in columns]
    with_head = any(row.get("head") for row in rows)
    header = ["task", *(["head"] if with_head else []), "metric", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"], *([row.get("head", "")] if with_head else []), row["metric"]]
        cells += [_format(row["values"].get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(output_dir: Path, run: dict[str, Any], payloads: list[dict[str, Any]]) -> Path:
    """report.md: run header, then each probe's table (metric next to baselines), notes, figures."""
    ckpt = run["checkpoint"]
    lines = [
        "# wensu evaluation report",
        "",
        f"- checkpoint: `{ckpt['path']}` (SHA-256 `{ckpt['sha256']}`)",
        f"- model: {ckpt.get('summary', '')}",
        f"- subset: {run['subset']}; seed: {run['seed']}; device: {run['device']}",
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()),
        "",
        "Columns: `model` = the checkpoint; `random-init` = a freshly initialised encoder of the "
        "same configuration; the others are non-neural baselines. Inputs and their SHA-256 are "
        "listed in each probe's `metrics.json`.",
    ]
    for payload in payloads:
        lines += ["", f"## {payload['probe']}", ""]
        lines += _table(payload["rows"])
        skipped = payload.get("skipped")
        if skipped:
            lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
        lines += [""] + [f"- {note}" for note in payload.get("notes", [])]
        lines += [f"- runtime: {payload['seconds']:.1f} s"]
        for figure in payload.get("figures", []):
            lines += ["", f"![{figure}]({figure})"]
    path = output_dir / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
