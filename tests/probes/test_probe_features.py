"""Frozen features equal a direct forward pass; baselines (one-hot, random-init twin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.common.baselines import one_hot, random_init_like
from wensu.probes.common.features import EncoderFeatures, FeatureSettings

SEQUENCES = ["MKVLAAGIWQ", "ACDEFGHIKLMNPQRSTVWYAC", "MKVLAAGIWQ", "GSHMSE"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32)).eval()


def _direct(encoder: Encoder, sequence: str, layer: int) -> dict:
    tokens = torch.from_numpy(get_alphabet().encode(sequence))[None]
    with torch.no_grad():
        out = encoder(tokens, repr_layers=[layer], need_attn=True)
    return {"rep": out["representations"][layer][0, 1:-1].numpy(), "attn": out["attentions"][0]}


def test_per_residue_and_mean_equal_direct_forward(encoder):
    features = EncoderFeatures(
        "m", encoder, get_alphabet(), FeatureSettings(layer=1, max_tokens=40, show_progress=False)
    )
    per_residue = features.per_residue(SEQUENCES)
    means = features.mean(SEQUENCES)
    assert features.layer == 1
    for seq, rep, mean in zip(SEQUENCES, per_residue, means, strict=True):
        expected = _direct(encoder, seq, 1)["rep"]
        assert rep.dtype == np.float16 and rep.shape == (len(seq), 16)
        np.testing.assert_allclose(rep.astype(np.float32), expected, atol=2e-2, rtol=1e-2)
        np.testing.assert_allclose(mean, expected.mean(0), atol=1e-5, rtol=1e-4)


def test_final_layer_and_attention_maps(encoder):
    features = EncoderFeatures("m", encoder, get_alphabet(), FeatureSettings(show_progress=False))
    assert features.layer == 2 and features.window is None
    attention = features.attention(SEQUENCES[1])
    direct = _direct(encoder, SEQUENCES[1], 2)["attn"]
    assert attention.shape == (2, 2, len(SEQUENCES[1]), len(SEQUENCES[1]))
    torch.testing.assert_close(attention, direct[:, :, 1:-1, 1:-1])


def test_sequences_longer_than_the_context_are_embedded_whole(encoder):
    long = "MKVLAAGIWQ" * 8
    settings = FeatureSettings(max_length=30, show_progress=False)
    rep = EncoderFeatures("m", encoder, get_alphabet(), settings).per_residue([long])[0]
    assert rep.shape == (80, 16) and np.isfinite(rep.astype(np.float32)).all()


def test_random_init_twin(encoder):
    rng_state = torch.random.get_rng_state()
    twin = random_init_like(encoder, seed=5)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
    again = random_init_like(encoder, seed=5)
    other = random_init_like(encoder, seed=6)
    assert twin.cfg.to_dict() == encoder.cfg.to_dict() and not twin.training
    for (name, p), q, r, s in zip(
        twin.named_parameters(),
        again.parameters(),
        other.parameters(),
        encoder.parameters(),
        strict=True,
    ):
        assert torch.equal(p, q), name
        if p.std() > 0:  # LayerNorm weights start at 1 everywhere
            assert not torch.equal(p, r) and not torch.equal(p, s), name


def test_one_hot_by_hand():
    x = one_hot("ACX")
    assert x.shape == (3, 21)
    assert x[0, 0] == 1 and x[1, 1] == 1 and x[2, 20] == 1 and x.sum() == 3
