"""ProteinGym's DMS metrics, as its ``performance_DMS_benchmarks.py`` computes them, and its
per-assay summary CSVs (one per metric, one row per assay, one column per model).

* Spearman: ``scipy.stats.spearmanr(DMS_score, prediction)``.
* AUC: ``roc_auc_score(DMS_score_bin, prediction)``.
* MCC: ``matthews_corrcoef(DMS_score_bin, prediction >= median(prediction))``.
* NDCG: gains = min-max scaled ``DMS_score``; the top ``floor(0.1 n)`` predictions (ties broken
  by order, as ``argsort``) discounted by ``1 / log2(rank + 1)``; over the ideal ordering.
* Top_recall: share of ``DMS_score >= 90th percentile`` whose prediction is also
  ``>= its 90th percentile``.

AUC and MCC are NaN without ``DMS_score_bin`` or with a single class. These differ from the
tie-aware ranking metrics of :mod:`wensu.probes.variants.metrics` used for the built-in sets only
where predictions tie.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

PROTEINGYM_METRICS = ("Spearman", "AUC", "MCC", "NDCG", "Top_recall")
TOP_PERCENT = 10


def _minmax(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


def ndcg(measured: np.ndarray, predicted: np.ndarray, top_percent: int = TOP_PERCENT) -> float:
    """ProteinGym ``calc_ndcg`` (quantile mode)."""
    k = int(np.floor(len(measured) * top_percent / 100))
    gains = _minmax(measured)
    ranks = np.argsort(np.argsort(-predicted)) + 1
    keep = (ranks <= k) & (gains != 0)
    if not keep.any():
        return 0.0
    dcg = float(np.sum(gains[keep] / np.log2(ranks[keep] + 1)))
    ideal_ranks = np.argsort(np.argsort(-gains)) + 1
    ideal = (ideal_ranks <= k) & (gains != 0)
    return dcg / float(np.sum(gains[ideal] / np.log2(ideal_ranks[ideal] + 1)))


def top_recall(
    measured: np.ndarray, predicted: np.ndarray, top_percent: int = TOP_PERCENT
) -> float:
    """ProteinGym ``calc_toprecall``."""
    top_true = measured >= np.percentile(measured, 100 - top_percent)
    top_model = predicted >= np.percentile(predicted, 100 - top_percent)
    return float((top_true & top_model).sum() / top_true.sum()) if top_true.sum() else 0.0


def assay_metrics(
    measured: np.ndarray, predicted: np.ndarray, bins: np.ndarray | None
) -> dict[str, float]:
    """The five ProteinGym metrics of one assay and one model."""
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    y = np.asarray(measured, dtype=np.float64)
    s = np.asarray(predicted, dtype=np.float64)
    constant = np.ptp(s) == 0 or np.ptp(y) == 0
    out = {
        "Spearman": math.nan if constant else float(spearmanr(y, s)[0]),
        "AUC": math.nan,
        "MCC": math.nan,
        "NDCG": math.nan if np.ptp(y) == 0 else ndcg(y, s),
        "Top_recall": top_recall(y, s),
    }
    if bins is not None and len(np.unique(bins)) == 2:
        out["AUC"] = float(roc_auc_score(bins, s))
        out["MCC"] = float(matthews_corrcoef(bins, (s >= np.median(s)).astype(int)))
    return out


def write_summary_csvs(
    folder: Path,
    per_assay: Mapping[str, Mapping[str, Mapping[str, float]]],
    models: Sequence[str],
    extra: Mapping[str, Mapping[str, object]],
    kind: str = "substitutions",
) -> list[Path]:
    """``DMS_<kind>_<Metric>_DMS_level.csv`` per metric: ``DMS ID``, one column per model
    (values rounded to 3 decimals as ProteinGym's), then ``extra`` columns (number_mutants,
    UniProt_ID, ...). ``per_assay[assay][model][metric]``. Returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    extra_columns = list(dict.fromkeys(k for row in extra.values() for k in row))
    written = []
    for metric in PROTEINGYM_METRICS:
        path = folder / f"DMS_{kind}_{metric}_DMS_level.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["DMS ID", *models, *extra_columns])
            for assay, by_model in per_assay.items():
                values = [by_model[m][metric] for m in models]
                cells = ["" if math.isnan(v) else f"{round(v, 3):.3f}" for v in values]
                writer.writerow([assay, *cells, *(extra[assay].get(c, "") for c in extra_columns)])
        written.append(path)
    return written
