"""AMR probe data and evaluation: real TSV counts (amr/SOURCES.md), family-grouped folds,
metrics against sklearn / hand values, composition baselines."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import require_shared
from sklearn.metrics import f1_score

from wensu.probes.amr.probe import (
    AMRProtein,
    binary_metrics,
    binary_task,
    classification_metrics,
    drug_class_task,
    family_folds_disjoint,
    grouped_predictions,
    read_amr_tsv,
)
from wensu.probes.common.baselines import composition, composition_features
from wensu.probes.common.errors import ProbeDataError

TSV = "amr/amrfinderplus_2024-07-22.1_proteins_labelled.tsv"


@pytest.fixture(scope="module")
def proteins() -> tuple[list[AMRProtein], Counter]:
    return read_amr_tsv(require_shared(TSV))


def test_counts_match_sources(proteins):
    rows, quarantined = proteins
    assert len(rows) + sum(quarantined.values()) == 8_600
    assert quarantined == Counter({"invalid_characters": 1})  # one sequence holds '*'
    types = Counter(p.type for p in rows)
    assert types["AMR"] == 7_136 and types["VIRULENCE"] == 960
    chosen, classes = drug_class_task(rows)
    assert len(classes) == 16 and "" not in classes  # SOURCES.md: 16 classes >= 20 proteins
    assert Counter(p.drug_class for p in chosen)["BETA-LACTAM"] == 4_783
    assert len(binary_task(rows)) == 7_136 + 960 + 257


def test_caps_are_per_class_and_deterministic(proteins):
    rows, _ = proteins
    chosen, classes = drug_class_task(rows, max_per_class=7)
    counts = Counter(p.drug_class for p in chosen)
    assert set(counts.values()) == {7} and len(counts) == len(classes)
    again, _ = drug_class_task(list(reversed(rows)), max_per_class=7)
    assert [p.accession for p in again] == [p.accession for p in chosen]


def test_folds_never_share_a_family(proteins):
    rows, _ = proteins
    chosen, classes = drug_class_task(rows, max_per_class=40)
    y = np.array([classes.index(p.drug_class) for p in chosen])
    groups = [p.family for p in chosen]
    assert family_folds_disjoint(y, groups, folds=5, seed=0)


def test_grouped_predictions_on_a_learnable_task():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = np.eye(3)[y] * 3 + rng.standard_normal((120, 3))
    groups = [f"family{i // 4}" for i in range(120)]  # 4 members per family, 30 families
    predicted, probabilities = grouped_predictions(x, y, groups, folds=5, seed=0)
    assert (predicted == y).mean() > 0.9
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    with pytest.raises(ValueError, match="two families"):
        grouped_predictions(x, y, ["same"] * 120)


def test_classification_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    metrics = classification_metrics(y, predicted, ["A", "B", "C"])
    # A: tp 1, fp 1, fn 1 -> 0.5; B: tp 2, fp 1, fn 0 -> 0.8; C: 0
    assert metrics["per_class_f1"] == pytest.approx({"A": 0.5, "B": 0.8, "C": 0.0})
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"))
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(3 / 5)


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 0, 0])
    result = binary_metrics(y, np.array([1, 0, 0, 0]), np.array([0.9, 0.4, 0.3, 0.1]))
    assert result["f1"] == pytest.approx(2 / 3) and result["auroc"] == 1.0


def test_composition_by_hand():
    aa = composition("AACX")
    assert aa[0] == pytest.approx(2 / 3) and aa[1] == pytest.approx(1 / 3) and aa.sum() == 1.0
    kmers = composition("ACDA", k=3)  # ACD, CDA
    index = {"ACD": 0 * 400 + 1 * 20 + 2, "CDA": 1 * 400 + 2 * 20 + 0}
    assert kmers[index["ACD"]] == 0.5 and kmers[index["CDA"]] == 0.5 and kmers.sum() == 1.0
    assert composition("AXA", k=3).sum() == 0.0  # only k-mers of standard residues count
    assert composition_features(["ACDA"]).shape == (1, 20 + 8000)


def test_missing_columns_and_empty_file(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("accession\tsequence\nA1\tMKV\n")
    with pytest.raises(ProbeDataError, match=r"bad\.tsv: header lacks columns"):
        read_amr_tsv(bad)
    empty = tmp_path / "empty.tsv"
    empty.write_text("accession\tparent_node\ttype\tdrug_class\tsequence\nA1\tf\tAMR\tX\t\n")
    with pytest.raises(ProbeDataError, match="no usable proteins"):
        read_amr_tsv(empty)
