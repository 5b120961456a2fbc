"""Masked perplexity: deterministic masking, batching-independent NLL, exact reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.baselines import STANDARD
from wensu.probes.perplexity.probe import (
    mask_sequences,
    masked_nll,
    perplexity,
    unigram_log_probs,
    unigram_nll,
)

SEQUENCES = ["MKVLAAGIWQX" * 3, "ACDEFGHIKLMNPQRSTVWY", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"]


def test_masking_is_deterministic_and_only_touches_standard_residues():
    alphabet = get_alphabet()
    first = mask_sequences(SEQUENCES, alphabet, seed=3)
    second = mask_sequences(SEQUENCES, alphabet, seed=3)
    other = mask_sequences(SEQUENCES, alphabet, seed=4)
    for a, b in zip(first.positions, second.positions, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b) for a, b in zip(first.positions, other.positions, strict=True)
    )
    standard = {alphabet.index[a] for a in STANDARD}
    for seq, tokens, positions, targets in zip(
        SEQUENCES, first.inputs, first.positions, first.targets, strict=True
    ):
        n_standard = sum(c in STANDARD for c in seq)
        assert len(positions) == max(1, round(0.15 * n_standard))
        assert (tokens[positions] == alphabet.mask_idx).all()
        assert set(targets.tolist()) <= standard
        assert 0 not in positions and len(seq) + 1 not in positions  # never <cls>/<eos>
        original = alphabet.encode(seq)
        np.testing.assert_array_equal(original[positions], targets)
        keep = np.ones(len(original), dtype=bool)
        keep[positions] = False
        np.testing.assert_array_equal(tokens[keep], original[keep])


class UniformOverResidues(nn.Module):
    """Logits 0 for the 20 standard residues, -inf elsewhere: perplexity must be exactly 20."""

    def forward(self, tokens):
        logits = torch.full((*tokens.shape, 33), float("-inf"))
        logits[..., [get_alphabet().index[a] for a in STANDARD]] = 0.0
        return {"logits": logits}


def test_uniform_model_has_perplexity_twenty():
    masked = mask_sequences(SEQUENCES, get_alphabet(), seed=0)
    total, count = masked_nll(UniformOverResidues(), get_alphabet(), masked, show_progress=False)
    assert count == sum(len(p) for p in masked.positions)
    assert perplexity(total, count) == pytest.approx(20.0)


def test_nll_does_not_depend_on_batching_and_matches_a_direct_forward():
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32)).eval()
    alphabet = get_alphabet()
    masked = mask_sequences(SEQUENCES, alphabet, seed=1)
    batched = masked_nll(encoder, alphabet, masked, max_tokens=10_000, show_progress=False)
    single = masked_nll(encoder, alphabet, masked, max_tokens=1, show_progress=False)
    assert batched[1] == single[1]
    assert batched[0] == pytest.approx(single[0], rel=1e-5)
    direct = 0.0
    for tokens, positions, targets in zip(
        masked.inputs, masked.positions, masked.targets, strict=True
    ):
        with torch.no_grad():
            logits = encoder(torch.from_numpy(tokens)[None])["logits"][0]
        log_probs = torch.log_softmax(logits[torch.from_numpy(positions)], -1)
        direct -= log_probs[torch.arange(len(targets)), torch.from_numpy(targets)].sum().item()
    assert batched[0] == pytest.approx(direct, rel=1e-5)


def test_unigram_by_hand():
    log_probs = unigram_log_probs(["AAAC", "XX"])
    # add-one: A 3+1, C 1+1, the other 18 residues 1 each -> 24
    assert math.exp(log_probs[STANDARD.index("A")]) == pytest.approx(4 / 24)
    assert math.exp(log_probs[STANDARD.index("C")]) == pytest.approx(2 / 24)
    assert math.exp(log_probs[STANDARD.index("W")]) == pytest.approx(1 / 24)
    masked = mask_sequences(["AC" * 10], get_alphabet(), seed=0)
    total, count = unigram_nll(log_probs, get_alphabet(), masked)
    targets = "".join(get_alphabet().tokens[t] for t in masked.targets[0])
    expected = -sum(math.log(4 / 24) if t == "A" else math.log(2 / 24) for t in targets)
    assert count == 3 and total == pytest.approx(expected)


def test_perplexity_of_nothing_is_nan():
    assert math.isnan(perplexity(0.0, 0))
    assert perplexity(2 * math.log(5), 2) == pytest.approx(5.0)
