"""Attention settings and inputs the model cannot take fail in one clear line."""

from __future__ import annotations

import pytest
import torch

from wensu.model import ConfigError, Encoder, EncoderConfig

TINY = dict(num_layers=1, d_model=16, num_heads=2, ffn_dim=32)


def _encoder(**attention) -> Encoder:
    return Encoder(EncoderConfig(**TINY, attention={"backend": "chunked", **attention}))


@pytest.mark.parametrize("backend", ["chunked", "flex"])
def test_window_not_a_multiple_of_the_block_size_is_refused(backend):
    with pytest.raises(ConfigError) as caught:
        EncoderConfig(**TINY, attention={"backend": backend, "window": 300, "block_size": 128})
    message = str(caught.value)
    assert "attention.window=300 is not a multiple of attention.block_size=128" in message
    assert "window=256 or 384, or block_size=100" in message and "\n" not in message


@pytest.mark.parametrize("window,block", [(256, 128), (64, 128), (0, 128), (12, 4)])
def test_whole_blocks_and_sub_block_windows_are_accepted(window, block):
    cfg = EncoderConfig(
        **TINY, attention={"backend": "chunked", "window": window, "block_size": block}
    )
    assert cfg.attention.window == window
    # The dense backend computes any window exactly and has no blocks.
    EncoderConfig(**TINY, attention={"backend": "dense", "window": 300, "block_size": 128})


def test_global_tokens_beyond_the_sequence_are_refused():
    model = _encoder(window=4, num_global=5, block_size=4)
    with pytest.raises(ValueError, match=r"num_global=5 global tokens but the input has only 3 "):
        model(torch.tensor([[0, 5, 2]]))
    assert model(torch.tensor([[0, 5, 6, 7, 2]]))["logits"].shape == (1, 5, 33)


def test_float16_on_cpu_is_refused():
    model = _encoder(window=4, block_size=4).half()
    with pytest.raises(TypeError, match="float16 weights on CPU are not supported"):
        model(torch.tensor([[0, 5, 6, 2]]))
