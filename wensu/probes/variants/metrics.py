"""Ranking metrics for zero-shot variant-effect scores (ProteinGym definitions).

* Spearman rank correlation (average ranks for ties).
* NDCG@10%: gains = measured scores min-max scaled to [0, 1]; the top ``floor(0.1 n)`` predicted
  ranks count, discounted by ``1 / log2(rank + 1)``; normalised by the ideal ordering.
* top-10% recall: share of the ``round(0.1 n)`` best measured variants that are also among the
  ``round(0.1 n)`` best predicted ones.

Tied predictions (integer BLOSUM62 scores tie a lot) are counted at their expected value under
random tie-breaking, never by array order: NDCG shares a tie group's discounts equally among its
members (as scikit-learn's ``ndcg_score``), recall gives each member of the group that straddles
the cut-off a fractional membership.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata

METRICS = ("spearman", "ndcg", "top_recall")
TOP_FRACTION = 0.1


def _arrays(measured, predicted) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(measured, dtype=np.float64)
    s = np.asarray(predicted, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"measured and predicted must be 1-d of one length: {y.shape}, {s.shape}")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise ValueError("measured and predicted scores must be finite")
    return y, s


def spearman(measured, predicted) -> float:
    """Spearman's rho; NaN when either side is constant or there are fewer than 2 values."""
    y, s = _arrays(measured, predicted)
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(s) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(y), rankdata(s))[0, 1])


def _tie_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order (descending, stable), and start and size of each group of equal values in it."""
    order = np.argsort(-values, kind="stable")
    _, starts, sizes = np.unique(-values[order], return_index=True, return_counts=True)
    return order, starts, sizes


def ndcg(measured, predicted, top_fraction: float = TOP_FRACTION) -> float:
    """NDCG over the top ``floor(top_fraction * n)`` predictions (at least 1); NaN if no gain."""
    y, s = _arrays(measured, predicted)
    k = max(1, int(np.floor(len(y) * top_fraction)))
    span = np.ptp(y)
    if span == 0:
        return float("nan")
    gains = (y - y.min()) / span
    discounts = np.zeros(len(y))
    discounts[:k] = 1.0 / np.log2(np.arange(2, k + 2))
    cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    order, starts, sizes = _tie_groups(s)
    mean_gain = np.add.reduceat(gains[order], starts) / sizes
    dcg = float((mean_gain * (cumulative[starts + sizes] - cumulative[starts])).sum())
    ideal = float((np.sort(gains)[::-1] * discounts).sum())
    return dcg / ideal


def top_membership(values: np.ndarray, k: int) -> np.ndarray:
    """Probability that each item is among the ``k`` largest when ties are broken at random."""
    order, starts, sizes = _tie_groups(np.asarray(values, dtype=np.float64))
    weights = np.zeros(len(values))
    for start, size in zip(starts, sizes, strict=True):
        taken = min(max(k - start, 0), size)
        if taken == 0:
            break
        weights[order[start : start + size]] = taken / size
    return weights


def top_recall(measured, predicted, top_fraction: float = TOP_FRACTION) -> float:
    """Expected share of the top ``round(top_fraction * n)`` measured in the predicted top."""
    y, s = _arrays(measured, predicted)
    k = max(1, int(round(len(y) * top_fraction)))
    return float((top_membership(y, k) * top_membership(s, k)).sum() / k)


def set_metrics(measured, predicted) -> dict[str, float]:
    """``{spearman, ndcg, top_recall}`` of one set."""
    return {
        "spearman": spearman(measured, predicted),
        "ndcg": ndcg(measured, predicted),
        "top_recall": top_recall(measured, predicted),
    }


def protein_means(
    per_set: Mapping[str, Mapping[str, Mapping[str, float]]], protein_of: Mapping[str, str]
) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """Average sets of the same protein first, then proteins.

    ``per_set[set][scorer][metric]`` -> (``{protein: {"sets": [...], "metrics":
    {scorer: {metric: mean}}}}``, ``{scorer: {metric: mean over proteins}}``). NaN values
    (constant predictions) are left out of a mean; a mean of nothing is NaN.
    """
    by_protein: dict[str, list[str]] = {}
    for name in per_set:
        by_protein.setdefault(protein_of[name], []).append(name)
    scorers = list(next(iter(per_set.values()))) if per_set else []

    def mean(values: list[float]) -> float:
        finite = [v for v in values if not np.isnan(v)]
        return float(np.mean(finite)) if finite else float("nan")

    proteins = {
        protein: {
            "sets": names,
            "metrics": {
                scorer: {m: mean([per_set[n][scorer][m] for n in names]) for m in METRICS}
                for scorer in scorers
            },
        }
        for protein, names in by_protein.items()
    }
    summary = {
        scorer: {m: mean([p["metrics"][scorer][m] for p in proteins.values()]) for m in METRICS}
        for scorer in scorers
    }
    return proteins, summary
