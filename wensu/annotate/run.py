"""The annotation of one file: read and check, predict, report, write a new .h5ad and a plot.

The output is the input's AnnData (read into memory from the file, which is opened read-only)
plus the ``wensu_*`` fields, written to a temporary name and renamed, so an interrupted run
never leaves a half file; an output path equal to the input is refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from wensu.annotate.predict import Predictions, predict_cells
from wensu.checkpoint import load_cell_classifier
from wensu.data.cell_inputs import CellInputError, CellMatrix, parse_file_spec, read_cell_file
from wensu.model.cell_encoder import CellCheckpointError

UNASSIGNED = "Unassigned"


class AnnotateError(ValueError):
    """Bad input for wensu-annotate; one line naming the file and the reason."""


def label_report(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Agreement with known labels, per true class; classes the classifier never saw in
    training are reported with what they were called (and left out of the scores)."""
    from sklearn.metrics import accuracy_score, f1_score

    per_class = {}
    for label in sorted(set(truth)):
        pick = truth == label
        called, counts = np.unique(predicted[pick], return_counts=True)
        per_class[str(label)] = {
            "cells": int(pick.sum()),
            "seen_in_training": label in classes,
            "recall": float((predicted[pick] == label).mean()) if label in classes else None,
            "predicted_as": {str(c): int(n) for c, n in zip(called, counts, strict=True)},
        }
    seen = np.isin(truth, classes)
    scores: dict[str, Any] = {"per_class": per_class, "cells_of_unseen_classes": int((~seen).sum())}
    if seen.any():
        present = sorted(set(truth[seen]))
        scores["accuracy"] = float(accuracy_score(truth[seen], predicted[seen]))
        scores["macro_f1"] = float(
            f1_score(truth[seen], predicted[seen], labels=present, average="macro", zero_division=0)
        )
    return scores


def _check_paths(input_path: Path, output: Path, overwrite: bool) -> None:
    if output.suffix != ".h5ad":
        raise AnnotateError(f"{output}: output must be a .h5ad file")
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        raise AnnotateError(f"{output}: is the input file; the input is never modified in place")
    if output.exists() and not overwrite:
        raise AnnotateError(f"{output}: exists (overwrite=true to replace it)")


def _write(
    cells: CellMatrix, output: Path, predictions: Predictions, min_confidence: float, uns: dict
) -> None:
    import anndata

    adata = anndata.read_h5ad(cells.path)
    labels, confidence = predictions.predicted(min_confidence, UNASSIGNED)
    adata.obs["wensu_cell_type"] = labels.astype(str)
    adata.obs["wensu_confidence"] = confidence.astype(np.float32)
    adata.obsm["wensu_proba"] = predictions.proba
    adata.obsm["X_wensu"] = predictions.embedding
    adata.uns["wensu_classes"] = np.array(predictions.classes, dtype=object)
    adata.uns["wensu_annotation"] = uns
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    adata.write_h5ad(tmp)
    os.replace(tmp, output)


def embedding_plot(path: Path, embedding: np.ndarray, labels: np.ndarray, title: str) -> Path:
    """PCA of the cell embeddings, coloured by predicted cell type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    points = PCA(n_components=2, random_state=0).fit_transform(embedding)
    classes = sorted(set(labels))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for i, label in enumerate(classes):
        pick = labels == label
        colour = "lightgrey" if label == UNASSIGNED else cmap(i % cmap.N)
        ax.scatter(*points[pick].T, s=3, color=colour, label=f"{label} ({pick.sum()})", alpha=0.7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("PC 1 of X_wensu")
    ax.set_ylabel("PC 2 of X_wensu")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# Below this share of the classifier's panel found in the input, the report says how to
# fine-tune for the input's own genes (what the Symphony benchmark file needs: 231 of 1,280).
PANEL_COVERAGE_NOTE = 0.9


def annotate(
    checkpoint: str | os.PathLike,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    gene_column: str | None = None,
    values: str = "auto",
    matrix: str = "X",
    min_genes: int = 100,
    min_confidence: float = 0.5,
    label_column: str | None = None,
    plot: bool = True,
    overwrite: bool = False,
    max_tokens: int = 16384,
) -> dict:
    """Annotate ``input`` into ``output``; returns the report (also in ``uns``). Errors are
    :class:`AnnotateError` with one line naming the file."""
    started = time.perf_counter()
    spec = parse_file_spec(input, label_column)
    output = Path(output).expanduser()
    if not 0 <= min_confidence <= 1:
        raise AnnotateError(f"min_confidence must be in [0, 1], got {min_confidence}")
    try:
        _check_paths(spec.path, output, overwrite)
        classifier, info = load_cell_classifier(checkpoint)
        cells = read_cell_file(spec, gene_column=gene_column, values=values, matrix=matrix)
        predictions = predict_cells(
            classifier, info, cells, min_genes=min_genes, max_tokens=max_tokens
        )
    except (CellInputError, CellCheckpointError) as error:
        raise AnnotateError(" ".join(str(error).split())) from None
    labels, confidence = predictions.predicted(min_confidence, UNASSIGNED)
    names, counts = np.unique(labels, return_counts=True)
    report: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "input": str(spec.path.resolve()),
        "values_detected": cells.value_kind,
        "genes": predictions.mapping.report(),
        "cells": cells.n_cells,
        "cells_without_panel_genes": predictions.cells_without_genes,
        "min_confidence": float(min_confidence),
        "predicted": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
        "median_confidence": float(np.median(confidence)),
    }
    coverage = predictions.mapping.overlap / max(len(info["panel"]), 1)
    if coverage < PANEL_COVERAGE_NOTE:
        report["panel_note"] = (
            f"{spec.path.name} measures {coverage:.0%} of the classifier's gene panel; the missing "
            "genes shift its input, so fine-tune a classifier on exactly the genes it measures "
            f"(wensu-train experiment=cells_finetune 'data.panel_from=[{spec.path}]')"
        )
    if cells.labels is not None:
        report["known_labels"] = {
            "column": spec.label_column,
            **label_report(cells.labels, labels, predictions.classes),
        }
    if plot:
        png = output.with_name(output.stem + "_embedding.png")
        output.parent.mkdir(parents=True, exist_ok=True)
        embedding_plot(png, predictions.embedding, labels, f"{spec.path.name}: wensu cell types")
        report["plot"] = str(png)
    report["seconds"] = round(time.perf_counter() - started, 2)
    _write(cells, output, predictions, min_confidence, _uns_safe(report))
    report["output"] = str(output)
    return report


def _uns_safe(report: dict) -> dict:
    """``report`` with JSON text for the nested parts (h5ad stores flat mappings robustly)."""
    import json

    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in report.items()}
