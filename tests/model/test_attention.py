"""Attention pattern and backends: every backend equals an explicit reference computation."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from wensu.model import EncoderConfig
from wensu.model.attention import (
    AttentionPattern,
    ChunkedAttention,
    DenseAttention,
    FlexAttention,
    available_backends,
    build_backend,
)
from wensu.model.attention.flex import block_structure
from wensu.model.encoder import Encoder

# (seq_len, window, num_global, lengths in the batch, chunked block size)
CASES = [
    (37, 3, 0, [37, 20], 16),  # L not a multiple of the block, no global token
    (37, 3, 2, [37, 20], 16),
    (64, 100, 1, [64, 1], 16),  # window >= L, a batch row of a single token
    (50, None, 1, [50, 30], 16),  # dense pattern through every backend
    (50, 0, 0, [50, 10], 8),  # padding queries that see no key at all
    (100, 5, 3, [100, 2], 32),
    (5, 2, 7, [5, 3], 4),  # more global tokens than positions
    (130, 8, 1, [130, 129, 61], 32),
]


def _padding(lengths: list[int], seq_len: int) -> torch.Tensor | None:
    mask = torch.arange(seq_len)[None, :] >= torch.tensor(lengths)[:, None]
    return mask if bool(mask.any()) else None


def _qkv(batch: int, seq_len: int, heads: int = 2, dim: int = 8, seed: int = 0, **kw):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, seq_len, dim, generator=generator, **kw).requires_grad_()
        for _ in range(3)
    ]


def _reference_mask(seq_len, window, num_global, padding):
    """The pattern written out element by element, straight from its definition."""
    batch = 1 if padding is None else padding.shape[0]
    mask = torch.zeros(batch, 1, seq_len, seq_len, dtype=torch.bool)
    for b in range(batch):
        for i in range(seq_len):
            for j in range(seq_len):
                near = window is None or abs(i - j) <= window
                seen = near or i < num_global or j < num_global
                mask[b, 0, i, j] = seen and (padding is None or not bool(padding[b, j]))
    return mask


def _reference_attention(q, k, v, mask):
    """softmax(q k^T) v over visible keys; rows with no visible key give 0."""
    scores = (q @ k.transpose(-1, -2)).masked_fill(~mask, float("-inf"))
    has_key = mask.any(-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(~has_key, 0.0), dim=-1) * has_key
    return probs @ v


def _weighted_sum(out: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    return (out * weights).sum()


@pytest.mark.parametrize("seq_len,window,num_global,lengths,block", CASES)
def test_dense_mask_matches_definition(seq_len, window, num_global, lengths, block):
    padding = _padding(lengths, seq_len)
    pattern = AttentionPattern(window, num_global)
    expected = _reference_mask(seq_len, window, num_global, padding)
    assert torch.equal(pattern.dense_mask(seq_len, padding).expand_as(expected), expected)


@pytest.mark.parametrize("seq_len,window,num_global,lengths,block", CASES)
@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_backend_matches_reference_outputs_and_gradients(
    backend, seq_len, window, num_global, lengths, block
):
    padding = _padding(lengths, seq_len)
    mask = _reference_mask(seq_len, window, num_global, padding)
    q, k, v = _qkv(len(lengths), seq_len)
    expected = _reference_attention(q, k, v, mask)
    expected_grads = torch.autograd.grad(_weighted_sum(expected), (q, k, v))

    attention = build_backend(backend, AttentionPattern(window, num_global), block)
    out = attention(q, k, v, padding)
    grads = torch.autograd.grad(_weighted_sum(out), (q, k, v))

    assert not torch.isnan(out).any()
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seq_len,window,num_global,lengths,block", CASES)
def test_flex_forward_matches_reference(seq_len, window, num_global, lengths, block):
    padding = _padding(lengths, seq_len)
    mask = _reference_mask(seq_len, window, num_global, padding)
    q, k, v = (t.detach() for t in _qkv(len(lengths), seq_len, dim=16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is not compiled
        out = FlexAttention(AttentionPattern(window, num_global), compile=False)(q, k, v, padding)
    torch.testing.assert_close(out, _reference_attention(q, k, v, mask), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "seq_len,window,num_global,lengths",
    [
        (300, 5, 1, [300, 140]),
        (520, 130, 3, [520, 390]),
        (256, None, 0, [256, 100]),
        (77, 0, 0, [77]),
    ],
)
def test_flex_block_structure_is_exact_where_it_claims(seq_len, window, num_global, lengths):
    """Every tile holding a visible pair is kept; a tile marked full is fully visible."""
    block = 128
    padding = _padding(lengths, seq_len)
    pattern = AttentionPattern(window, num_global)
    partial, full = block_structure(pattern, padding, seq_len, block)
    dense = pattern.dense_mask(seq_len, padding)
    tiles = -(-seq_len // block)
    assert not (partial & full).any()
    for b in range(dense.shape[0]):
        for qi in range(tiles):
            for ki in range(tiles):
                tile = dense[b, 0, qi * block : (qi + 1) * block, ki * block : (ki + 1) * block]
                kept_partial = bool(partial[min(b, partial.shape[0] - 1), 0, qi, ki])
                kept_full = bool(full[min(b, full.shape[0] - 1), 0, qi, ki])
                if bool(tile.any()):
                    assert kept_partial or kept_full, (b, qi, ki)
                if kept_full:
                    assert tile.shape == (block, block) and bool(tile.all()), (b, qi, ki)


@pytest.mark.slow
def test_flex_compiled_cpu_inference_matches_reference():
    seq_len, lengths = 300, [300, 140]
    padding = _padding(lengths, seq_len)
    mask = _reference_mask(seq_len, 5, 1, padding)
    q, k, v = (t.detach() for t in _qkv(2, seq_len, dim=16))
    with torch.no_grad():
        out = FlexAttention(AttentionPattern(5, 1))(q, k, v, padding)
    torch.testing.assert_close(out, _reference_attention(q, k, v, mask), atol=2e-6, rtol=1e-5)


def test_flex_training_on_cpu_falls_back_to_chunked(caplog):
    pattern = AttentionPattern(4, 1)
    padding = _padding([40, 25], 40)
    q, k, v = _qkv(2, 40, dim=16)
    with caplog.at_level(logging.WARNING, logger="wensu.model.attention.flex"):
        import wensu.model.attention.flex as flex_module

        flex_module._warned_cpu_fallback = False
        out = FlexAttention(pattern)(q, k, v, padding)
    assert "training on CPU uses the 'chunked' backend" in caplog.text
    expected = ChunkedAttention(pattern, 128)(q, k, v, padding)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
    # Under no_grad the same (grad-requiring) inputs run flex itself, not the fallback.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inference = FlexAttention(pattern, compile=False)(q, k, v, padding)
    torch.testing.assert_close(inference, expected.detach(), atol=2e-6, rtol=1e-5)


def _encoder(backend: str, window, num_global, block_size=16) -> Encoder:
    cfg = EncoderConfig(
        num_layers=2,
        d_model=32,
        num_heads=4,
        ffn_dim=64,
        attention={
            "backend": backend,
            "window": window,
            "num_global": num_global,
            "block_size": block_size,
        },
    )
    torch.manual_seed(0)
    return Encoder(cfg).double()


@pytest.mark.parametrize("backend", ["chunked", "flex"])
@pytest.mark.parametrize("window,num_global", [(4, 1), (6, 0), (None, 1)])
def test_encoder_backends_agree_with_dense_in_weight_gradients(backend, window, num_global):
    tokens = torch.randint(4, 24, (3, 45), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 0
    tokens[1, 30:] = 1
    tokens[2, 7:] = 1
    tokens[0, 10:14] = 32
    results = {}
    for name in ("dense", backend):
        model = _encoder(name, window, num_global)
        out = model(tokens, repr_layers=[0])
        embedded = out["representations"][0]
        embedded.retain_grad()
        _weighted_sum(out["logits"]).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        results[name] = (out["logits"], embedded.grad, grads)
    dense_logits, dense_input_grad, dense_grads = results["dense"]
    logits, input_grad, grads = results[backend]
    torch.testing.assert_close(logits, dense_logits, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(input_grad, dense_input_grad, atol=1e-10, rtol=1e-9)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-10, rtol=1e-9, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["chunked", "flex"])
def test_bf16_gpu_backends_agree_with_dense(backend):
    device = torch.device("cuda")
    seq_len, lengths = 700, [700, 433]
    padding = _padding(lengths, seq_len).to(device)
    pattern = AttentionPattern(64, 1)
    q, k, v = (
        t.detach().to(device, torch.bfloat16).requires_grad_()
        for t in _qkv(2, seq_len, heads=4, dim=32)
    )
    dense = DenseAttention(pattern)(q, k, v, padding)
    dense_grads = torch.autograd.grad(dense.float().sum(), (q, k, v))
    out = build_backend(backend, pattern)(q, k, v, padding)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    torch.testing.assert_close(out, dense, atol=2e-2, rtol=2e-2)
    for got, want in zip(grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)


def test_registry_lists_backends_and_rejects_unknown():
    assert set(available_backends()) >= {"dense", "chunked", "flex"}
    with pytest.raises(ValueError, match="unknown attention backend 'sparse'"):
        build_backend("sparse", AttentionPattern(4, 1))
