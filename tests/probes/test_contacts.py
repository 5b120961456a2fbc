"""Contact prediction maths: APC, precision@L/k by hand, the regression, window accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from wensu.probes.contacts.probe import (
    apc,
    attention_features,
    beyond_window_fraction,
    contact_precisions,
    fit_contact_regression,
    pair_mask,
    precision_at,
    predict_contacts,
    symmetrize,
    training_pairs,
)


def test_apc_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # row sums 3, 7; column sums 4, 6; total 10 -> correction r_i c_j / 10
    expected = torch.tensor([[1 - 12 / 10, 2 - 18 / 10], [3 - 28 / 10, 4 - 42 / 10]])
    torch.testing.assert_close(apc(x), expected)
    u = torch.tensor([0.5, 1.0, 2.0, 3.0])
    torch.testing.assert_close(apc(torch.outer(u, u)), torch.zeros(4, 4), atol=1e-6, rtol=0)


def test_attention_features_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    attn = rng.random((2, 3, 7, 7)).astype(np.float32)
    features = attention_features(torch.from_numpy(attn))
    assert features.shape == (6, 7, 7)
    for f, (layer, head) in enumerate((a, b) for a in range(2) for b in range(3)):
        s = attn[layer, head] + attn[layer, head].T
        ref = s - np.outer(s.sum(1), s.sum(0)) / s.sum()
        np.testing.assert_allclose(features[f].numpy(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(symmetrize(features), 2 * features)


def _hand_map():
    contacts = np.zeros((10, 10), dtype=bool)
    for i, j in [(0, 6), (1, 7), (3, 9)]:
        contacts[i, j] = contacts[j, i] = True
    scores = np.zeros((10, 10))
    for (i, j), s in {(0, 6): 0.9, (2, 8): 0.8, (1, 7): 0.7, (0, 9): 0.6, (3, 9): 0.1}.items():
        scores[i, j] = scores[j, i] = s
    return scores, contacts


def test_precision_at_by_hand():
    scores, contacts = _hand_map()
    valid = np.ones_like(contacts)
    short = {"min_sep": 6, "max_sep": 12}
    # 10 candidate pairs with 6 <= j - i < 12, 3 contacts
    assert precision_at(scores, contacts, valid, fraction=1, **short) == pytest.approx(3 / 10)
    assert precision_at(scores, contacts, valid, fraction=2, **short) == pytest.approx(3 / 5)
    assert precision_at(scores, contacts, valid, fraction=5, **short) == pytest.approx(1 / 2)
    valid[3, :] = valid[:, 3] = False  # residue 3 unobserved: (3, 9) no longer counts
    assert precision_at(scores, contacts, valid, fraction=2, **short) == pytest.approx(2 / 5)
    # no medium-range candidates in a 10-residue protein: 0 of L/k, not undefined
    assert precision_at(scores, contacts, valid, fraction=1, min_sep=12, max_sep=24) == 0.0


def test_contact_precisions_names_and_ranges():
    scores, contacts = _hand_map()
    result = contact_precisions(scores, contacts, np.ones_like(contacts))
    assert list(result) == [
        f"{r} {m}" for r in ("short", "medium", "long") for m in ("P@L", "P@L/2", "P@L/5")
    ]
    assert result["short P@L"] == pytest.approx(0.3) and result["long P@L"] == 0.0


def test_weak_small_scale_features_still_get_weights():
    """A small model's APC values are ~1e-3: standardising keeps L1 from zeroing them."""
    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < 0.05).astype(np.int64)
    x = (1e-3 * (0.5 * y + rng.standard_normal(20_000)))[:, None]
    assert fit_contact_regression(x, y).nonzero == 1


def test_ties_count_at_their_expected_value():
    contacts = np.zeros((20, 20), dtype=bool)
    contacts[0, 10] = contacts[10, 0] = contacts[1, 15] = contacts[15, 1] = True
    valid = np.ones_like(contacts)
    mask = pair_mask(20, 6)
    rate = contacts[mask].sum() / mask.sum()  # 2 of 105 pairs with j - i >= 6
    constant = np.full((20, 20), 0.3)
    assert precision_at(constant, contacts, valid, min_sep=6, max_sep=None, fraction=2) == (
        pytest.approx(rate)
    )
    constant[0, 10] = 0.9  # one strictly better pair, 9 slots left among 104 tied pairs
    expected = (1 + 9 * 1 / 104) / 10
    assert precision_at(constant, contacts, valid, min_sep=6, max_sep=None, fraction=2) == (
        pytest.approx(expected)
    )


def test_apc_recovers_contacts_hidden_under_a_background():
    """Raw attention is dominated by a row/column background; after APC the contacts are on top."""
    length = 60
    rng = np.random.default_rng(0)
    u = rng.uniform(0.2, 3.0, size=length)
    contacts = np.zeros((length, length), dtype=bool)
    for i in range(0, length - 30, 1):
        contacts[i, i + 30] = contacts[i + 30, i] = True  # 30 long-range contacts
    attention = np.outer(u, u) + 0.5 * contacts
    valid = np.ones_like(contacts)
    features = attention_features(torch.from_numpy(attention[None, None]).float())[0].numpy()
    long = {"min_sep": 24, "max_sep": None}
    assert precision_at(features, contacts, valid, fraction=2, **long) == 1.0  # top 30 = the 30
    assert precision_at(attention, contacts, valid, fraction=2, **long) < 0.5


def test_regression_training_pairs_and_prediction():
    rng = np.random.default_rng(1)
    length = 40
    contacts = rng.random((length, length)) < 0.1
    contacts = contacts | contacts.T
    valid = np.ones_like(contacts)
    noise = rng.standard_normal((2, length, length))
    noise = noise + noise.transpose(0, 2, 1)
    signal = 3.0 * contacts + 0.3 * noise[0]
    features = torch.from_numpy(np.stack([signal, noise[1]])).float()
    x, y = training_pairs(features, contacts, valid)
    mask = pair_mask(length, 6)
    assert x.shape == (mask.sum(), 2) and y.sum() == contacts[mask].sum()
    regression = fit_contact_regression(x, y, penalty="l1", c=0.15)
    assert regression.weights[0] > 0.3 and abs(regression.weights[1]) < 0.05
    probabilities = predict_contacts(regression, features)
    flat = features.numpy().reshape(2, -1).T
    # the fit ran on standardised features: the same model through sklearn's own pipeline
    reference = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.15, solver="liblinear", l1_ratio=1.0, random_state=0),
    ).fit(x, y)
    expected = reference.predict_proba(flat)[:, 1].reshape(length, length)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert precision_at(probabilities, contacts, valid, min_sep=6, max_sep=None, fraction=5) == 1.0
    l2 = fit_contact_regression(x, y, penalty="l2", c=1.0)
    assert l2.weights[0] > 0.3 and l2.nonzero == 2
    with pytest.raises(ValueError, match="penalty"):
        fit_contact_regression(x, y, penalty="l0")
    with pytest.raises(ValueError, match="both contacts and non-contacts"):
        fit_contact_regression(x, np.zeros_like(y))


def test_beyond_window_fraction_by_hand():
    contacts = np.zeros((100, 100), dtype=bool)
    for i, j in [(0, 30), (10, 60), (5, 8)]:  # separations 30, 50 (long) and 3 (short)
        contacts[i, j] = contacts[j, i] = True
    valid = np.ones_like(contacts)
    assert beyond_window_fraction(contacts, valid, 40) == 0.5
    assert beyond_window_fraction(contacts, valid, None) == 0.0
    assert beyond_window_fraction(contacts, valid, 60) == 0.0
