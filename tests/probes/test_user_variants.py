"""Variant effects on user DMS assays in ProteinGym format: reading, checks, indels, metrics."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, require_shared
from helpers_probe_cli import probe_cli_args, run_eval, tiny_checkpoint
from scipy.stats import mannwhitneyu, rankdata, scoreatpercentile
from sklearn.metrics import ndcg_score

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.inputs import resolve_entries
from wensu.probes.variants.data import VariantDataError, parse_mutant
from wensu.probes.variants.probe import score_variants
from wensu.probes.variants.proteingym import DMS_SUFFIXES, load_assays, read_assay
from wensu.probes.variants.proteingym_metrics import PROTEINGYM_METRICS
from wensu.probes.variants.run import blosum62_scores
from wensu.probes.variants.user_sets import (
    checkpoint_column,
    evaluate_user_assays,
    pll_differences,
)

EXAMPLES = REPO_ROOT / "examples" / "eval" / "variants"
BLAT = "BLAT_ECOLX_Jacquier_2013"
SUMO1 = "SUMO1_HUMAN_Weile_2017"


def _user_sets(*entries):
    return resolve_entries([str(e) for e in entries], set(), DMS_SUFFIXES, where="t")


def _tiny(seed: int) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32)).eval()


def test_reference_file_and_fasta_give_the_wild_types():
    assays, references = load_assays(
        _user_sets(EXAMPLES / "proteingym", EXAMPLES / "fasta"), reference=None
    )
    blat, sumo = assays
    assert (blat.name, sumo.name) == (BLAT, SUMO1) and not blat.indel
    assert references == [EXAMPLES / "proteingym" / "DMS_substitutions.csv"]
    assert blat.wild_type_source == "reference file" and len(blat.wild_type) == 286
    assert sumo.wild_type_source.endswith(f"{SUMO1}.fasta")
    assert (len(blat), len(sumo)) == (250, 300) and set(blat.bins) == {0, 1}
    assert blat.reference["UniProt_ID"] == "BLAT_ECOLX"


def _write(tmp_path: Path, rows: list[list[str]], wild_type: str = "MKTAYIAK") -> Path:
    path = tmp_path / "ASSAY_1.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (tmp_path / "ASSAY_1.fasta").write_text(f">wt\n{wild_type}\n")
    return path


HEADER = ["mutant", "mutated_sequence", "DMS_score", "DMS_score_bin"]


def test_multi_mutants_are_checked_against_mutated_sequence(tmp_path):
    path = _write(
        tmp_path, [HEADER, ["M1A:K2G", "AGTAYIAK", "0.5", "1"], ["T3S", "MKSAYIAK", "-1", "0"]]
    )
    assay = read_assay(path, {})
    assert assay.parsed == (parse_mutant("M1A:K2G"), parse_mutant("T3S"))
    assert assay.scores.tolist() == [0.5, -1.0] and assay.bins.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [HEADER, ["K1A", "AKTAYIAK", "1", "1"]],
            r"line 2: wild-type residue mismatch at position 1",
        ),
        (
            [HEADER, ["M1A", "AKTAYIAK", "1", "1"], ["M1A", "AKTAYIAK", "2", "0"]],
            r"line 3: duplicate mutant M1A \(already on line 2\)",
        ),
        ([HEADER, ["M1A", "AKTAYIAK", "high", "1"]], r"line 2: DMS_score 'high' is not a finite"),
        ([HEADER, ["M1A", "AKTAYIAK", "nan", "1"]], r"line 2: DMS_score 'nan' is not a finite"),
        ([HEADER, ["M1A", "AKTAYIAK", "1", "2"]], r"line 2: DMS_score_bin '2' is not 0 or 1"),
        ([HEADER, ["M1A", "GKTAYIAK", "1", "1"]], r"line 2: mutated_sequence is not the wild type"),
        ([HEADER], r"no variants \(header only\)"),
        (
            [["mutant", "score"], ["M1A", "1"]],
            r"missing column\(s\) \['mutated_sequence', 'DMS_score'\]",
        ),
    ],
)
def test_bad_rows_are_one_line_errors_naming_file_and_line(tmp_path, rows, message):
    path = _write(tmp_path, rows)
    with pytest.raises(VariantDataError, match=message) as err:
        read_assay(path, {})
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mutant_outside_the_sequence(tmp_path):
    outside = _write(tmp_path, [HEADER, ["A9G", "MKTAYIAK", "1", "1"]])
    with pytest.raises(
        VariantDataError, match=r"ASSAY_1\.csv line 2: position 9 of A9G is outside"
    ):
        read_assay(outside, {})
    longer = _write(tmp_path, [HEADER, ["K9A", "MKTAYIAKA", "1", "1"]])
    assert read_assay(longer, {}).indel  # a longer mutated_sequence is an insertion assay


def test_empty_file_and_missing_wild_type(tmp_path):
    empty = tmp_path / "EMPTY.csv"
    empty.write_text("")
    (tmp_path / "EMPTY.fasta").write_text(">x\nMK\n")
    with pytest.raises(VariantDataError, match=r"EMPTY\.csv: empty file"):
        read_assay(empty, {})
    orphan = tmp_path / "ORPHAN.csv"
    orphan.write_text("mutant,mutated_sequence,DMS_score\nM1A,AK,1\n")
    with pytest.raises(VariantDataError, match=r"no wild-type sequence: .*ORPHAN\.fasta"):
        read_assay(orphan, {})


def test_indel_assay_scored_by_pseudo_log_likelihood_difference(tmp_path):
    """Deletions/insertions of real SUMO1: PLL(mutated) - PLL(wt); for a substitution the same
    number as the PLL method of score_variants."""
    wild_type = (EXAMPLES / "fasta" / f"{SUMO1}.fasta").read_text().split("\n", 1)[1].strip()
    rows = [["mutated_sequence", "DMS_score"], [wild_type[:10] + wild_type[11:], "-1.5"],
            [wild_type[:20] + "G" + wild_type[20:], "0.2"],
            [wild_type[:4] + "A" + wild_type[5:], "0.1"]]  # fmt: skip
    path = tmp_path / "SUMO1_indels.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    shutil.copy(EXAMPLES / "fasta" / f"{SUMO1}.fasta", tmp_path / "SUMO1_indels.fasta")
    assay = read_assay(path, {})
    assert assay.indel and assay.bins is None
    model, alphabet = _tiny(7), get_alphabet()
    scores = pll_differences(model, alphabet, wild_type, assay.sequences)
    mutant = f"{wild_type[4]}5A"
    substitution = score_variants(model, alphabet, wild_type, [mutant], method="pll")
    np.testing.assert_allclose(scores[2], substitution[0], rtol=1e-5, atol=1e-4)
    assert scores[0] != 0 and scores[1] != 0


def _independent(y: np.ndarray, s: np.ndarray, bins: np.ndarray) -> dict[str, float]:
    """ProteinGym's five metrics written out again with scipy/sklearn/numpy primitives."""
    rho = np.corrcoef(rankdata(y), rankdata(s))[0, 1]
    u = mannwhitneyu(s[bins == 1], s[bins == 0]).statistic
    auc = u / ((bins == 1).sum() * (bins == 0).sum())
    pred = s >= np.median(s)
    tp, tn = (pred & (bins == 1)).sum(), (~pred & (bins == 0)).sum()
    fp, fn = (pred & (bins == 0)).sum(), (~pred & (bins == 1)).sum()
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    gains = (y - y.min()) / (y.max() - y.min())
    ndcg = ndcg_score([gains], [s], k=int(len(y) // 10))
    top_y = y >= scoreatpercentile(y, 90)  # ties at the cut-off all count, as ProteinGym's
    top_s = s >= scoreatpercentile(s, 90)
    recall = (top_y & top_s).sum() / top_y.sum()
    return {"Spearman": rho, "AUC": auc, "MCC": mcc, "NDCG": ndcg, "Top_recall": recall}


def test_proteingym_metrics_equal_an_independent_computation(tmp_path):
    model, alphabet = _tiny(11), get_alphabet()
    result = evaluate_user_assays(
        {"model": model},
        alphabet,
        _user_sets(EXAMPLES / "proteingym"),
        {"reference": None, "max_variants": None, "method": "masked_marginal"},
        model_column="tiny/last",
        blosum=blosum62_scores,
        scorer_options={},
        output_dir=tmp_path,
    )
    details = result.details["user_assays"]
    [assay] = load_assays(_user_sets(EXAMPLES / "proteingym"), None)[0]
    predicted = score_variants(model, alphabet, assay.wild_type, assay.parsed)
    # A tiny model's float32 scores may tie a few variants (torch/numpy builds differ); the
    # independent computation uses ProteinGym's tie rules (average ranks, Mann-Whitney, sklearn
    # NDCG), so the two agree either way.
    assert len(np.unique(predicted)) >= len(predicted) - 5
    expected = _independent(assay.scores, predicted, assay.bins)
    ours = details["assays"][BLAT]["metrics"]["model"]
    for metric in PROTEINGYM_METRICS:
        assert ours[metric] == pytest.approx(expected[metric], abs=1e-9), metric
    with open(tmp_path / "proteingym" / "DMS_user_Spearman_DMS_level.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert list(row)[:4] == ["DMS ID", "tiny/last", "BLOSUM62", "number_mutants"]
    assert row["DMS ID"] == BLAT and float(row["tiny/last"]) == round(expected["Spearman"], 3)
    assert row["number_mutants"] == "250" and row["UniProt_ID"] == "BLAT_ECOLX"


def test_checkpoint_column_names():
    assert checkpoint_column("/r/run7/checkpoints/last.ckpt") == "run7/last"
    assert checkpoint_column("/w/esm2_t6_8M_UR50D.pt") == "esm2_t6_8M_UR50D"
    assert checkpoint_column("/w/my_model.ckpt") == "my_model"


def test_wensu_eval_variants_on_proteingym_folders(tmp_path):
    data = require_shared("variants").parent
    checkpoint = tiny_checkpoint(tmp_path / "wensu_tiny.ckpt", seed=9, max_length=512)
    sets = f"[{EXAMPLES / 'proteingym'},{EXAMPLES / 'fasta'},SPG1_STRSG_Olson_2014]"
    args = probe_cli_args(
        checkpoint, "variants", data, f"probe.variants.sets={sets}",
        "probe.variants.fast.max_variants=60", "probe.variants.heatmap_set=null",
    )  # fmt: skip
    done = run_eval(tmp_path, args)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "variants" / "metrics.json").read_text())
    tasks = {row["task"] for row in metrics["rows"]}
    assert {f"{BLAT} (n=60)", f"{SUMO1} (n=60)", "SPG1_STRSG_Olson_2014 (n=60)"} <= tasks
    assert "mean over 2 user assays" in tasks and "mean over 1 proteins" in tasks
    user = metrics["details"]["user_assays"]
    assert user["model_column"] == "wensu_tiny" and set(user["assays"]) == {BLAT, SUMO1}
    folder = tmp_path / "out" / "variants" / "proteingym"
    for metric in PROTEINGYM_METRICS:
        with open(folder / f"DMS_user_{metric}_DMS_level.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["DMS ID"] for r in rows] == [BLAT, SUMO1] and "wensu_tiny" in rows[0]


def test_wensu_eval_bad_assay_is_one_line(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=9, max_length=512)
    path = _write(tmp_path, [HEADER, ["K1A", "AKTAYIAK", "1", "1"]])
    done = run_eval(tmp_path, probe_cli_args(
        checkpoint, "variants", require_shared("variants").parent, f"probe.variants.sets=[{path}]"
    ))  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path} line 2: wild-type residue mismatch at position 1")


def test_gzipped_assay_with_its_fasta(tmp_path):
    source = EXAMPLES / "fasta" / f"{SUMO1}.csv"
    (tmp_path / f"{SUMO1}.csv.gz").write_bytes(gzip.compress(source.read_bytes()))
    shutil.copy(EXAMPLES / "fasta" / f"{SUMO1}.fasta", tmp_path)
    [assay] = load_assays(_user_sets(tmp_path), None)[0]
    assert assay.name == SUMO1 and len(assay) == 300
