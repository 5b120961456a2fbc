"""Flash-style chunked attention (`BandAttentionFunction`) against dense SDPA with the same mask.

Both band-pass implementations (the fused CPU kernel and the tensor-op path that GPUs and
attention dropout use) are checked on a grid of lengths, windows, global tokens and padding,
in outputs and in gradients, and the autograd graph is checked to keep no probability block.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import wensu.model.attention.blockwise as blockwise
from wensu.model.attention import AttentionPattern, ChunkedAttention
from wensu.model.attention.band import BandGeometry
from wensu.model.attention.blockwise import band_attention

LENGTHS = [1, 17, 64, 203]
WINDOWS = [0, 5, 16, 300]  # 300 covers every length (dense pattern)
GLOBALS = [0, 1, 3]


@pytest.fixture(params=["fused", "tensor_ops"])
def path(request, monkeypatch):
    monkeypatch.setattr(blockwise, "FUSED_CPU", request.param == "fused")
    return request.param


def _inputs(batch, seq_len, heads=2, dim=8, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, heads, seq_len, dim, generator=generator, dtype=dtype).requires_grad_()
        for _ in range(3)
    ]


def _padding(seq_len: int, padded: bool) -> torch.Tensor | None:
    if not padded:
        return None
    lengths = torch.tensor([seq_len, max(1, seq_len // 3), max(1, seq_len - 7)])
    return torch.arange(seq_len)[None] >= lengths[:, None]


def dense_sdpa(q, k, v, pattern: AttentionPattern, padding):
    """SDPA with the pattern's explicit [B, 1, L, L] mask; rows that see no key give 0."""
    mask = pattern.dense_mask(q.shape[-2], padding)
    has_key = mask.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~has_key, scale=1.0)
    return out * has_key


def _weighted_sum(out):
    return (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("num_global", GLOBALS)
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_outputs_and_gradients_equal_dense_sdpa(path, seq_len, window, num_global, padded):
    padding = _padding(seq_len, padded)
    batch = 1 if padding is None else padding.shape[0]
    pattern = AttentionPattern(window, num_global)
    q, k, v = _inputs(batch, seq_len)
    expected = dense_sdpa(q, k, v, pattern, padding)
    expected_grads = torch.autograd.grad(_weighted_sum(expected), (q, k, v))

    out = ChunkedAttention(pattern, block_size=8)(q, k, v, padding)
    grads = torch.autograd.grad(_weighted_sum(out), (q, k, v))

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for name, got, want in zip("qkv", grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"grad {name}")


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_gradcheck_float64(path, dropout_p):
    """Backward is the exact derivative of forward, dropout included (same seed, same masks)."""
    if path == "fused" and dropout_p:
        pytest.skip("dropout always takes the tensor-op path")
    padding = _padding(13, True)
    geo = BandGeometry(AttentionPattern(4, 2), 13, 4)
    q, k, v = _inputs(3, 13, heads=1, dim=4, dtype=torch.float64)

    def attend(q, k, v):
        torch.manual_seed(0)  # the dropout seed is drawn from the global generator
        return band_attention(q, k, v, geo, padding, dropout_p)

    assert torch.autograd.gradcheck(attend, (q, k, v), eps=1e-6, atol=1e-6, fast_mode=True)


def test_dropout_changes_output_and_is_reproducible(path):
    q, k, v = _inputs(1, 40)
    geo = BandGeometry(AttentionPattern(8, 1), 40, 8)
    plain = band_attention(q, k, v, geo)
    torch.manual_seed(3)
    first = band_attention(q, k, v, geo, dropout_p=0.5)
    torch.manual_seed(3)
    second = band_attention(q, k, v, geo, dropout_p=0.5)
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, plain)


def test_graph_keeps_only_inputs_output_and_row_statistics(path):
    """Saved for backward: q, k, v, the output and one log-sum-exp per row, nothing L x span."""
    seq_len, heads, dim = 512, 4, 8
    q, k, v = _inputs(1, seq_len, heads, dim)
    saved = []

    def pack(tensor):
        saved.append(tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = ChunkedAttention(AttentionPattern(64, 1), block_size=32)(q, k, v)
    per_tensor = seq_len * heads * dim * 4
    assert sum(saved) <= 4 * per_tensor + seq_len * heads * 4
    assert out.shape == q.shape


def test_bfloat16_on_cpu_is_close_to_float32():
    q, k, v = _inputs(1, 100, heads=2, dim=16)
    pattern = AttentionPattern(16, 1)
    want = ChunkedAttention(pattern, 16)(q, k, v)
    got = ChunkedAttention(pattern, 16)(*(t.detach().bfloat16() for t in (q, k, v)))
    torch.testing.assert_close(got.float(), want.detach(), atol=3e-2, rtol=3e-2)


def test_float16_on_cpu_is_a_clear_error():
    q, k, v = (t.detach().half() for t in _inputs(1, 20))
    with pytest.raises(TypeError, match="float16 attention on CPU is not supported"):
        ChunkedAttention(AttentionPattern(4, 1), 8)(q, k, v)
