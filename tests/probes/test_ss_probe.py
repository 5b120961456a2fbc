"""SS probe heads: metrics against hand-computed values, training with early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wensu.probes.ss.probe import (
    IGNORE,
    ConvHead,
    ProbeData,
    ProbeSettings,
    accuracy,
    per_class_f1,
    predict,
    train_probe,
)


def test_q3_and_f1_on_a_toy_example():
    labels = [np.array([0, 0, 1, 2, IGNORE]), np.array([1, 2, 2])]
    predictions = [np.array([0, 1, 1, 2, 0]), np.array([1, 2, 0])]
    # scored: true 0 0 1 2 | 1 2 2 ; predicted 0 1 1 2 | 1 2 0 -> 5 of 7 correct
    assert accuracy(predictions, labels) == pytest.approx(5 / 7)
    f1 = per_class_f1(predictions, labels, "HEC")
    assert f1["H"] == pytest.approx(2 * 1 / (2 + 2))  # tp 1, predicted 2, true 2
    assert f1["E"] == pytest.approx(2 * 2 / (3 + 2))  # tp 2, predicted 3, true 2
    assert f1["C"] == pytest.approx(2 * 2 / (2 + 3))  # tp 2, predicted 2, true 3


def test_f1_is_nan_for_a_class_never_seen():
    f1 = per_class_f1([np.array([0, 0])], [np.array([0, 0])], "HEC")
    assert f1["H"] == 1.0 and np.isnan(f1["E"]) and np.isnan(f1["C"])


def _toy(n: int, rng: np.random.Generator, context: bool) -> ProbeData:
    """Labels in {0,1,2}; features = noisy one-hot of the label (or of the previous residue's)."""
    features, labels = [], []
    for _ in range(n):
        length = int(rng.integers(20, 60))
        y = rng.integers(0, 3, size=length)
        source = np.roll(y, 1) if context else y
        x = np.eye(3, dtype=np.float32)[source] + 0.3 * rng.standard_normal((length, 3))
        y = y.copy()
        y[:1] = IGNORE
        features.append(x.astype(np.float16))
        labels.append(y)
    return ProbeData(features, labels)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_probes_learn_a_separable_task(kind):
    rng = np.random.default_rng(0)
    train, valid, test = (_toy(n, rng, context=False) for n in (60, 20, 20))
    settings = ProbeSettings(max_epochs=15, patience=3, batch_residues=512, lr=0.01)
    probe = train_probe(kind, train, valid, 3, settings)
    assert accuracy(predict(probe, test), test.labels) > 0.95
    assert probe.best_epoch == int(np.argmax([h["valid_accuracy"] for h in probe.history])) + 1


def test_conv_head_uses_neighbouring_residues():
    """Labels depend on the previous residue's features: only the conv head can see them."""
    rng = np.random.default_rng(1)
    train, valid, test = (_toy(n, rng, context=True) for n in (60, 20, 20))
    settings = ProbeSettings(max_epochs=15, patience=3, batch_residues=512, lr=0.01)
    conv = train_probe("conv", train, valid, 3, settings)
    linear = train_probe("linear", train, valid, 3, settings)
    assert accuracy(predict(conv, test), test.labels) > 0.9
    assert accuracy(predict(linear, test), test.labels) < 0.5


def test_early_stopping_restores_the_best_epoch():
    rng = np.random.default_rng(2)
    train, valid = _toy(40, rng, context=False), _toy(10, rng, context=False)
    probe = train_probe("linear", train, valid, 3, ProbeSettings(max_epochs=6, patience=2, lr=0.05))
    best = max(h["valid_accuracy"] for h in probe.history)
    assert accuracy(predict(probe, valid), valid.labels) == pytest.approx(best)
    assert len(probe.history) <= 6


def test_conv_head_keeps_length():
    head = ConvHead(dim=5, num_classes=8, channels=4, kernel=7, dropout=0.0)
    assert head(torch.zeros(2, 11, 5)).shape == (2, 11, 8)


def test_probe_data_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="sequence 0: 3 feature rows vs 2 labels"):
        ProbeData([np.zeros((3, 2))], [np.zeros(2, dtype=np.int64)])
