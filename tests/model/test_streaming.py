"""Streamed encoding of one long sequence equals the encoder's own forward pass (dense backend,
same windowed pattern): every layer, chunks smaller and larger than the window, 0-3 global
tokens, <mask> tokens (token dropout), MoE feed-forwards; and its one-line refusals."""

from __future__ import annotations

import pytest
import torch
from helpers_embed import tiny_encoder

from wensu.model import Encoder, EncoderConfig
from wensu.model.moe import unlimited_expert_capacity
from wensu.model.streaming import stream_encode

CASES = [
    # length, window, num_global, chunk, ffn
    (700, 32, 1, 100, "dense"),
    (700, 32, 3, 20, "dense"),  # chunk smaller than the window: the halo spans chunks
    (1000, 64, 2, 256, "moe"),
    (300, 16, 0, 50, "dense"),
    (257, 8, 1, 1000, "dense"),  # one chunk
]


def _encoder(window: int, num_global: int, ffn: str) -> Encoder:
    return tiny_encoder(ffn=ffn, backend="dense", window=window, num_global=num_global)


@pytest.mark.parametrize(("length", "window", "num_global", "chunk", "ffn"), CASES)
def test_streamed_layers_equal_the_forward_pass(length, window, num_global, chunk, ffn):
    encoder = _encoder(window, num_global, ffn)
    generator = torch.Generator().manual_seed(length)
    tokens = torch.randint(4, 24, (length,), generator=generator)
    tokens[0], tokens[-1], tokens[5] = 0, 2, 32  # <cls>, <eos>, one <mask>
    got = {layer: torch.full((length, 32), float("nan")) for layer in (0, 1, 2)}
    calls = []

    def sink(layer, start, values):
        calls.append((layer, start))
        got[layer][start : start + len(values)] = values

    with torch.no_grad(), unlimited_expert_capacity(encoder):
        expected = encoder(tokens[None], repr_layers=[0, 1, 2])["representations"]
        stream_encode(encoder, tokens, [0, 1, 2], sink, chunk_size=chunk)
    for layer in (0, 1, 2):
        torch.testing.assert_close(got[layer], expected[layer][0], atol=1e-5, rtol=1e-5)
    starts = list(range(0, length, chunk))
    assert calls == [(layer, s) for layer in (0, 1, 2) for s in starts]  # layer by layer


def test_only_the_requested_layers_reach_the_sink():
    encoder = _encoder(16, 1, "dense")
    tokens = torch.randint(4, 24, (100,))
    seen = set()
    stream_encode(encoder, tokens, [1], lambda layer, start, values: seen.add(layer), 30)
    assert seen == {1}


def test_refusals_are_one_line():
    tokens = torch.randint(4, 24, (50,))
    dense = Encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=32)).eval()
    with pytest.raises(ValueError, match="needs a windowed model"):
        stream_encode(dense, tokens, [1], lambda *a: None)
    windowed = _encoder(8, 1, "dense")
    with pytest.raises(ValueError, match=r"one sequence \[length\]"):
        stream_encode(windowed, tokens[None], [1], lambda *a: None)
    with pytest.raises(ValueError, match="for inference"):
        stream_encode(windowed.train(), tokens, [1], lambda *a: None)
