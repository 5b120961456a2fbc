"""Antimicrobial-resistance probes on mean embeddings of NCBI AMRFinderPlus reference proteins.

* Drug class: proteins of ``type == AMR`` whose ``drug_class`` has at least ``min_members``
  proteins (empty class excluded) -> multinomial logistic regression.
* AMR vs. not: ``type == AMR`` against ``VIRULENCE`` and ``STRESS`` (``REFERENCE_WT`` rows are
  wild-type reference proteins, neither, and are left out).

Alleles of one family are near-identical, so evaluation is grouped cross-validation by
``parent_node`` (sklearn ``StratifiedGroupKFold``): every protein is predicted once, by a model
that saw no member of its family. Never a random split.
"""

from __future__ import annotations

import csv
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from wensu.alphabet import InvalidSequenceError, get_alphabet
from wensu.probes.common.errors import ProbeDataError

REQUIRED_COLUMNS = ("accession", "parent_node", "type", "drug_class", "sequence")
NEGATIVE_TYPES = ("VIRULENCE", "STRESS")


@dataclass(frozen=True)
class AMRProtein:
    accession: str
    family: str
    type: str
    drug_class: str
    sequence: str


def read_amr_tsv(path: Path) -> tuple[list[AMRProtein], Counter]:
    """Proteins of the labelled AMRFinderPlus TSV, and the count of quarantined rows by reason."""
    path = Path(path)
    proteins: list[AMRProtein] = []
    quarantined: Counter = Counter()
    alphabet = get_alphabet()
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ProbeDataError(f"{path}: header lacks columns {missing}")
        for row in reader:
            sequence = (row["sequence"] or "").strip().upper()
            if not sequence:
                quarantined["empty_sequence"] += 1
                continue
            try:
                alphabet.encode(sequence, add_special=False)
            except InvalidSequenceError:
                quarantined["invalid_characters"] += 1
                continue
            proteins.append(
                AMRProtein(
                    row["accession"],
                    row["parent_node"] or row["accession"],
                    row["type"],
                    row["drug_class"],
                    sequence,
                )
            )
    if not proteins:
        raise ProbeDataError(f"{path}: no usable proteins")
    return proteins, quarantined


def _stable_order(items: list[AMRProtein]) -> list[AMRProtein]:
    return sorted(items, key=lambda p: zlib.crc32(p.accession.encode()))


def drug_class_task(
    proteins: list[AMRProtein], min_members: int = 20, max_per_class: int | None = None
) -> tuple[list[AMRProtein], list[str]]:
    """AMR proteins of drug classes with >= min_members proteins (optionally capped per class)."""
    amr = [p for p in proteins if p.type == "AMR" and p.drug_class]
    counts = Counter(p.drug_class for p in amr)
    classes = sorted(c for c, n in counts.items() if n >= min_members)
    chosen: list[AMRProtein] = []
    for cls in classes:
        members = _stable_order([p for p in amr if p.drug_class == cls])
        chosen.extend(members[:max_per_class])
    return chosen, classes


def binary_task(proteins: list[AMRProtein], max_per_side: int | None = None) -> list[AMRProtein]:
    """AMR proteins and VIRULENCE/STRESS proteins (optionally capped per side)."""
    positive = _stable_order([p for p in proteins if p.type == "AMR"])[:max_per_side]
    negative = _stable_order([p for p in proteins if p.type in NEGATIVE_TYPES])[:max_per_side]
    return positive + negative


def grouped_predictions(
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    *,
    folds: int = 5,
    seed: int = 0,
    c: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (predicted label, class probabilities) from family-grouped cross-validation.

    Standardised features, class-balanced multinomial logistic regression. A fold whose training
    part lacks some class predicts among the classes it saw. BLAS runs single-threaded: these
    fits are small, and multi-threaded OpenBLAS spin-waits badly on a shared, busy CPU.
    """
    classes = np.unique(y)
    splitter = _splitter(y, groups, folds, seed)
    predicted = np.empty_like(y)
    probabilities = np.zeros((len(y), len(classes)))
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splitter.split(x, y, groups):
            model = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed),
            )
            model.fit(x[train], y[train])
            predicted[test] = model.predict(x[test])
            seen = np.searchsorted(classes, model.classes_)
            probabilities[np.ix_(test, seen)] = model.predict_proba(x[test])
    return predicted, probabilities


def _splitter(y: np.ndarray, groups: list[str], folds: int, seed: int) -> StratifiedGroupKFold:
    """Family-grouped stratified folds; fewer folds when there are too few families/members."""
    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError("grouped cross-validation needs at least two families")
    largest_class = int(np.bincount(np.unique(y, return_inverse=True)[1]).max())
    n_splits = max(2, min(folds, n_groups, largest_class))
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def family_folds_disjoint(y: np.ndarray, groups: list[str], folds: int = 5, seed: int = 0) -> bool:
    """True when no family appears on both sides of any fold (the split's leakage guarantee)."""
    g = np.asarray(groups)
    splitter = _splitter(y, groups, folds, seed)
    return all(
        not set(g[train]) & set(g[test]) for train, test in splitter.split(np.zeros(len(y)), y, g)
    )


def classification_metrics(y: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Macro-F1, accuracy, per-class F1 and the confusion matrix (rows = true classes)."""
    labels = list(range(len(classes)))
    per_class = f1_score(y, predicted, labels=labels, average=None, zero_division=0.0)
    return {
        "macro_f1": float(
            f1_score(y, predicted, labels=labels, average="macro", zero_division=0.0)
        ),
        "accuracy": float((y == predicted).mean()),
        "per_class_f1": {cls: float(f) for cls, f in zip(classes, per_class, strict=True)},
        "confusion": confusion_matrix(y, predicted, labels=labels).tolist(),
        "support": {cls: int((y == i).sum()) for i, cls in enumerate(classes)},
    }


def binary_metrics(y: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict:
    """F1 of the positive class (AMR), accuracy and ROC AUC."""
    return {
        "f1": float(f1_score(y, predicted, zero_division=0.0)),
        "accuracy": float((y == predicted).mean()),
        "auroc": float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan"),
    }
