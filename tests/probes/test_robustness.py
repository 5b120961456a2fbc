"""Robustness probe: exact perturbations, cosine/accuracy against manual computations, rare
letters through every path, and ``wensu-eval probe=robustness`` as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import require_shared
from helpers_probe_cli import probe_cli_args, run_eval, tiny_checkpoint

from wensu.alphabet import get_alphabet
from wensu.embed import embed
from wensu.embeddings import read as read_embeddings
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.features import EncoderFeatures, FeatureSettings
from wensu.probes.interpret.attention_heads import head_precisions
from wensu.probes.interpret.data import read_proteins
from wensu.probes.interpret.logit_lens import logit_lens
from wensu.probes.robustness.perturb import (
    STANDARD,
    concatenate,
    concatenation_groups,
    mask_with_x,
    substitute,
    truncate,
)
from wensu.probes.robustness.probe import embedding_similarity, evaluate_perturbation, row_cosine
from wensu.probes.robustness.run import perturbation_inputs
from wensu.probes.ss.probe import ProbeData, ProbeSettings, predict, train_probe
from wensu.probes.variants.probe import ResidueLogProbs, score_variants

RARE = "MKUVOLBZXAGTRwyk"  # U, O, B, Z, X and lower case


@pytest.fixture(scope="module")
def features() -> EncoderFeatures:
    torch.manual_seed(5)
    encoder = Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32))
    settings = FeatureSettings(max_length=40, max_tokens=2048, show_progress=False)
    return EncoderFeatures("model", encoder, get_alphabet(), settings)


def _protein(n: int, seed: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list(STANDARD), n))


def test_substitution_and_x_masking_change_exactly_the_share():
    sequence = _protein(200, 0)
    for rate in (0.0, 0.01, 0.05, 0.2):
        sub = substitute(sequence, rate, np.random.default_rng(1))
        diff = [i for i, (a, b) in enumerate(zip(sequence, sub.sequence, strict=True)) if a != b]
        assert len(diff) == sub.changed == round(rate * 200)
        assert all(sub.sequence[i] in STANDARD for i in diff)
        masked = mask_with_x(sequence, rate, np.random.default_rng(1))
        assert masked.sequence.count("X") == masked.changed == round(rate * 200)
        assert len(masked.sequence) == len(sub.sequence) == 200
    with pytest.raises(ValueError, match="rate"):
        substitute(sequence, 1.5, np.random.default_rng(0))


def test_truncation_and_concatenation_alignments():
    sequence = _protein(50, 2)
    n_cut = truncate(sequence, 0.2, "N", protein=3)
    assert n_cut.sequence == sequence[10:] and n_cut.segments == ((3, 10, 0, 40),)
    c_cut = truncate(sequence, 0.2, "C")
    assert c_cut.sequence == sequence[:40] and c_cut.segments == ((0, 0, 0, 40),)
    joined = concatenate(["AAA", "CC", "DDDD"], [4, 5, 6])
    assert joined.sequence == "AAACCDDDD"
    assert joined.segments == ((4, 0, 0, 3), (5, 0, 3, 2), (6, 0, 5, 4))
    assert concatenation_groups(9, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_perturbation_inputs_are_seeded():
    sequences = [_protein(60, i) for i in range(4)]
    first = perturbation_inputs("substitution", 0.1, sequences, seed=0)
    assert first == perturbation_inputs("substitution", 0.1, sequences, seed=0)
    assert first != perturbation_inputs("substitution", 0.1, sequences, seed=1)
    clean = perturbation_inputs("x_masking", 0.0, sequences, seed=0)
    assert [p.sequence for p in clean] == sequences
    assert len(perturbation_inputs("concatenation", 2, sequences, seed=0)) == 2


def test_rate_zero_gives_cosine_one_and_no_drop(features):
    sequences = [_protein(n, i) for i, n in enumerate((30, 55, 90))]  # 55, 90 > max_length 40
    clean = features.per_residue(sequences)
    inputs = perturbation_inputs("substitution", 0.0, sequences, seed=0)
    point = evaluate_perturbation(features.per_residue, clean, inputs)
    assert point["mean_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert point["residue_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert point["mean_cosine_centred"] == pytest.approx(1.0, abs=1e-9)
    assert point["changed_residues"] == 0


def test_similarity_and_accuracy_equal_manual_computation(features):
    sequences = [_protein(n, 10 + i) for i, n in enumerate((32, 36, 38, 30))]
    clean = features.per_residue(sequences)
    truncated = [truncate(s, 0.25, "N", i) for i, s in enumerate(sequences)]
    perturbed = features.per_residue([t.sequence for t in truncated])
    result = embedding_similarity(clean, perturbed, truncated)
    manual = np.mean(
        [
            row_cosine(clean[i][t.segments[0][1] :], perturbed[i]).mean()
            for i, t in enumerate(truncated)
        ]
    )
    assert result["residue_cosine"] == pytest.approx(manual)
    assert "mean_cosine" not in result

    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, len(s)) for s in sequences]
    data = ProbeData(clean, labels)
    settings = ProbeSettings(max_epochs=2, patience=1, seed=0)
    probe = train_probe("linear", data, data, 3, settings)
    clean_predictions = predict(probe, data)
    point = evaluate_perturbation(
        features.per_residue, clean, truncated, probe, clean_predictions, labels
    )
    predicted = predict(
        probe,
        ProbeData(
            perturbed, [lab[t.segments[0][1] :] for lab, t in zip(labels, truncated, strict=True)]
        ),
    )
    hits = np.concatenate(
        [
            p == lab[t.segments[0][1] :]
            for p, lab, t in zip(predicted, labels, truncated, strict=True)
        ]
    )
    clean_hits = np.concatenate(
        [
            p[t.segments[0][1] :] == lab[t.segments[0][1] :]
            for p, lab, t in zip(clean_predictions, labels, truncated, strict=True)
        ]
    )
    assert point["accuracy"] == pytest.approx(hits.mean())
    assert point["clean_accuracy"] == pytest.approx(clean_hits.mean())
    assert point["drop"] == pytest.approx(clean_hits.mean() - hits.mean())


def test_rare_letters_go_through_every_path(tmp_path, features):
    fasta = tmp_path / "rare.fasta"
    fasta.write_text(f">rare1 OS=Test organism\n{RARE}*\n>rare2\n{RARE.lower()}BZ\n")
    proteins = read_proteins(fasta)
    sequences = [p.sequence for p in proteins]
    assert sequences[0] == RARE.upper()

    embed(features.encoder, fasta, tmp_path / "rare.h5", progress=False, device="cpu")
    embedded = read_embeddings(tmp_path / "rare.h5")
    direct = features.mean(sequences)
    assert sorted(embedded) == ["rare1", "rare2"]
    np.testing.assert_allclose(embedded["rare1"], direct[0], rtol=1e-4, atol=1e-5)

    per_residue = features.per_residue(sequences + [RARE])
    assert [len(x) for x in per_residue] == [len(RARE), len(RARE) + 2, len(RARE)]
    assert np.isfinite(features.mean(sequences)).all()
    attention = features.attention(sequences[0])
    contacts = np.zeros((len(RARE), len(RARE)), dtype=bool)
    contacts[0, -1] = contacts[-1, 0] = True
    assert head_precisions(attention, contacts, ~contacts | contacts).shape == (2, 2)
    lens, _ = logit_lens(features.encoder, features.alphabet, sequences)
    assert np.isfinite(lens["entropy"]).all()
    for kind, level in (("substitution", 0.2), ("x_masking", 0.2), ("truncation_C", 0.3)):
        inputs = perturbation_inputs(kind, level, sequences, seed=0)
        point = evaluate_perturbation(features.per_residue, per_residue[:2], inputs)
        assert -1 <= point["residue_cosine"] <= 1

    log_probs = ResidueLogProbs(features.encoder, features.alphabet, window=8)
    assert np.isfinite(log_probs.masked(sequences[0], [0, 2, 4, 15])).all()
    scores = score_variants(features.encoder, features.alphabet, sequences[0], ["M1A", "K2R:L6P"])
    assert np.isfinite(scores).all()


def test_cli_robustness(tmp_path):
    data = require_shared("")
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=3, max_length=128)
    args = probe_cli_args(
        checkpoint,
        "robustness",
        data,
        "probe.robustness.rates=[0.0,0.1]",
        "probe.robustness.truncations=[0.3]",
        "probe.robustness.concatenations=[4]",
        "probe.robustness.fast.test_limit=8",
        "probe.robustness.fast.max_train=20",
        "probe.robustness.fast.training.max_epochs=2",
    )
    run = run_eval(tmp_path, args)
    assert run.returncode == 0, run.stderr[-3000:]
    curves = json.loads((tmp_path / "out" / "robustness" / "curves.json").read_text())
    assert set(curves["curves"]) == {"model", "random-init"}
    for by_kind in curves["curves"].values():
        zero = by_kind["substitution"][0]
        assert zero["level"] == 0.0 and zero["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
        assert zero["drop"] == pytest.approx(0.0, abs=1e-12) and zero["changed_residues"] == 0
        assert by_kind["x_masking"][1]["mean_cosine"] < 1.0
        assert by_kind["concatenation"][0]["inputs"] == 2
        assert {"truncation_N", "truncation_C"} <= set(by_kind)
    assert "overlapping windows of 128 residues" in curves["long_input_policy"]
    assert (tmp_path / "out" / "robustness" / "curves.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "out" / "robustness" / "metrics.json").read_text())
    assert metrics["rows"][0]["task"] == "SS3 CB513 (clean)"
