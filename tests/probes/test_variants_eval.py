"""wensu.probes.variants.run / variant_metrics: metrics against scipy, scikit-learn and hand values,
the BLOSUM62 baseline, the end-to-end probe and the benchmark script."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, require_shared
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.variants.data import load_variant_sets, parse_mutant
from wensu.probes.variants.metrics import (
    ndcg,
    protein_means,
    set_metrics,
    spearman,
    top_membership,
    top_recall,
)
from wensu.probes.variants.probe import score_variants
from wensu.probes.variants.run import (
    blosum62_scores,
    default_settings,
    run_variants,
    run_variants_probe,
)


def test_blosum62_hand_values():
    mutants = [parse_mutant(m) for m in ["A1G", "W2C", "L3P", "D4E", "W5W", "A1G:L3P"]]
    # BLOSUM62: A-G 0, W-C -2, L-P -3, D-E 2, W-W 11.
    assert blosum62_scores(mutants).tolist() == [0.0, -2.0, -3.0, 2.0, 11.0, -3.0]


def test_blosum62_spearman_matches_the_index_on_all_real_sets():
    """sets.csv records Spearman(BLOSUM62, score) per set (3 decimals, computed independently)."""
    index = require_shared("variants/sets.csv")
    with open(index, newline="") as handle:
        recorded = {row["name"]: float(row["blosum62_spearman"]) for row in csv.DictReader(handle)}
    for variant_set in load_variant_sets(index.parent):
        rho = spearman(variant_set.scores, blosum62_scores(variant_set.mutants))
        assert rho == pytest.approx(recorded[variant_set.name], abs=6e-4), variant_set.name


def test_spearman_against_scipy_and_hand():
    rng = np.random.default_rng(0)
    measured = rng.normal(size=50)
    predicted = np.round(measured + rng.normal(size=50), 0)  # many ties
    assert spearman(measured, predicted) == pytest.approx(spearmanr(measured, predicted)[0])
    # Ranks 1..4 vs 1,2,4,3: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_ndcg_against_sklearn_with_ties():
    rng = np.random.default_rng(1)
    measured = rng.normal(size=200)
    for predicted in (measured + rng.normal(size=200), np.round(rng.normal(size=200))):
        gains = (measured - measured.min()) / np.ptp(measured)
        expected = ndcg_score([gains], [predicted], k=20, ignore_ties=False)
        assert ndcg(measured, predicted) == pytest.approx(expected, abs=1e-12)


def test_ndcg_by_hand():
    measured = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 9.0, 4.5,
                         1.5, 2.5, 3.5, 5.5, 6.5, 7.5, 8.5, 0.5])  # fmt: skip
    gains = measured / 10.0  # min 0, max 10; top floor(20 * 0.1) = 2 ranks count
    predicted = -np.arange(20.0)  # predicted order = array order: items 0 and 1 first
    dcg = gains[0] / np.log2(2) + gains[1] / np.log2(3)
    ideal = 1.0 / np.log2(2) + 0.9 / np.log2(3)
    assert ndcg(measured, predicted) == pytest.approx(dcg / ideal)
    tied = np.zeros(20)  # all tied: every item shares the two discounts equally
    expected = gains.mean() * (1 + 1 / np.log2(3)) / ideal
    assert ndcg(measured, tied) == pytest.approx(expected)


def test_top_recall_by_hand_with_ties():
    assert top_membership(np.array([5.0, 3, 3, 3, 1]), 2).tolist() == [1, 1 / 3, 1 / 3, 1 / 3, 0]
    measured = np.arange(20.0)  # top round(2.0) = items 18, 19
    predicted = np.arange(20.0)
    predicted[18] = -1  # item 19 and 17 are predicted top: one hit of two
    assert top_recall(measured, predicted) == pytest.approx(0.5)
    # Predicted: item 19 alone on top, items 0, 18 tied second -> 18 picked with p = 1/2.
    predicted = np.full(20, -5.0)
    predicted[19], predicted[[0, 18]] = 3.0, 2.0
    assert top_recall(measured, predicted) == pytest.approx((1 + 0.5) / 2)


def test_protein_means_count_tem1_once():
    per_set = {
        "TEM_a": {"m": {"spearman": 0.2, "ndcg": 0.5, "top_recall": 0.1}},
        "TEM_b": {"m": {"spearman": 0.4, "ndcg": 0.7, "top_recall": 0.3}},
        "GFP": {"m": {"spearman": 0.8, "ndcg": 0.9, "top_recall": float("nan")}},
    }
    proteins, summary = protein_means(per_set, {"TEM_a": "BLAT", "TEM_b": "BLAT", "GFP": "GFP"})
    assert proteins["BLAT"]["sets"] == ["TEM_a", "TEM_b"]
    assert proteins["BLAT"]["metrics"]["m"]["spearman"] == pytest.approx(0.3)
    assert summary["m"]["spearman"] == pytest.approx((0.3 + 0.8) / 2)  # not (0.2+0.4+0.8)/3
    assert summary["m"]["top_recall"] == pytest.approx(0.2)  # NaN protein left out


def test_fast_settings_come_from_the_config():
    assert default_settings("full")["max_variants"] is None
    fast = default_settings("fast")
    assert fast["max_variants"] == 200 and fast["method"] == "masked_marginal"
    with pytest.raises(ValueError, match="subset"):
        default_settings("quick")


def test_run_variants_probe_end_to_end(tmp_path):
    data = require_shared("variants")
    torch.manual_seed(3)
    model = Encoder(EncoderConfig(num_layers=1, d_model=32, num_heads=4, ffn_dim=64)).eval()
    names = ["YAP1_HUMAN_Araya_2012", "BLAT_ECOLX_Jacquier_2013"]
    metrics = run_variants_probe(
        model,
        get_alphabet(),
        data_dir=data.parent,
        output_dir=tmp_path / "out",
        sets=names,
        subset="fast",
        settings={"max_variants": 40},
        run_info={"command": "pytest"},
    )
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for column, values in metrics["summary"].items():
        assert written["summary"][column] == pytest.approx(values, nan_ok=True)
    for figure in written["figures"]:
        assert (tmp_path / "out" / figure).stat().st_size > 10_000
    assert any("heatmap_BLAT_ECOLX_Jacquier_2013" in f for f in written["figures"])
    assert written["run"] == {"command": "pytest"} and written["columns"] == [
        "model",
        "random-init",
        "BLOSUM62",
    ]
    for variant_set in load_variant_sets(data, names, 40):
        entry = written["sets"][variant_set.name]
        assert entry["variants"] == 40
        blosum = set_metrics(variant_set.scores, blosum62_scores(variant_set.mutants))
        assert entry["metrics"]["BLOSUM62"] == pytest.approx(blosum)
        scores = score_variants(
            model, get_alphabet(), variant_set.info.sequence, variant_set.mutants
        )
        model_metrics = set_metrics(variant_set.scores, scores)
        assert entry["metrics"]["model"] == pytest.approx(model_metrics)
    assert written["proteins"].keys() == {"YAP1_HUMAN", "BLAT_ECOLX"}
    assert "| mean over 2 proteins | Spearman |" in metrics["table_markdown"]
    assert written["inputs"][0]["path"].endswith("sets.csv")


def test_wensu_eval_runner_signature(tmp_path):
    from wensu.probes.common.baselines import random_init_like
    from wensu.probes.common.context import EvalContext
    from wensu.probes.common.features import EncoderFeatures, FeatureSettings

    data = require_shared("variants")
    torch.manual_seed(4)
    model = Encoder(EncoderConfig(num_layers=1, d_model=32, num_heads=4, ffn_dim=64)).eval()
    settings = FeatureSettings(max_length=300, show_progress=False)
    ctx = EvalContext(
        encoders=[
            EncoderFeatures("model", model, get_alphabet(), settings),
            EncoderFeatures("random-init", random_init_like(model), get_alphabet(), settings),
        ],
        data_dir=data.parent,
        output_dir=tmp_path,
        fast=True,
        show_progress=False,
    )
    names = ["YAP1_HUMAN_Araya_2012", "UBE4B_MOUSE_Starita_2013"]
    result = run_variants(ctx, {"sets": names, "max_variants": 12, "heatmap_set": None})
    assert result.probe == "variants"
    assert [row["task"] for row in result.rows[:2]] == [f"{n} (n=12)" for n in names]
    assert set(result.rows[0]["values"]) == {"model", "random-init", "BLOSUM62"}
    assert result.figures == ["variants/variants_spearman.png"]  # no TEM-1 set: no heatmap
    assert (tmp_path / "variants" / "variants_spearman.png").is_file()
    assert result.details["settings"]["window"] == 300  # the eval's max_length
    assert any("longer than 300 residues (YAP1_HUMAN_Araya_2012 504 aa" in n for n in result.notes)
    (ube4b,) = load_variant_sets(data, names[1:], 12)
    windowed = score_variants(model, get_alphabet(), ube4b.info.sequence, ube4b.mutants, window=300)
    expected = set_metrics(ube4b.scores, windowed)
    assert result.details["sets"][names[1]]["metrics"]["model"] == pytest.approx(expected)


def test_benchmark_script_as_a_user_runs_it(tmp_path):
    data = require_shared("variants")
    script = REPO_ROOT / "experiments" / "benchmarks" / "variants_zero_shot.py"
    command = [sys.executable, "-P", str(script), "--random-tiny", "--data-dir", str(data)]
    command += ["--sets", "YAP1_HUMAN_Araya_2012", "--max-variants", "15"]
    command += ["--output", str(tmp_path / "results")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| YAP1_HUMAN_Araya_2012 (n=15) | Spearman |" in done.stdout
    written = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert "--random-tiny" in written["run"]["command"] and written["run"]["date"]
    assert written["model"]["parameters"] == 106_529  # conf/model/tiny.yaml
    bad = subprocess.run(
        [*command[:-2], "--output", str(tmp_path / "bad"), "--window", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "error: window must be a positive" in bad.stderr
