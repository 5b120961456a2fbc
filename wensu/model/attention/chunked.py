"""Chunked backend: blocked sliding-window + global attention in pure PyTorch, O(L * (w + g)).

The work is done by `blockwise.BandAttentionFunction`, a flash-attention-style autograd
function: forward keeps the output and one log-sum-exp per row, backward recomputes each
block of scores. No L x L tensor and no probability block is kept, in training or inference,
so memory is linear in L in both directions; masks are built per step from positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wensu.model.attention.base import AttentionBackend, PreparedAttention
from wensu.model.attention.blockwise import BandGeometry, band_attention
from wensu.model.attention.pattern import AttentionPattern


def check_cpu_dtype(q: Tensor) -> None:
    """float16 has no fast or exact CPU kernels for this attention; say so in one line."""
    if q.device.type == "cpu" and q.dtype == torch.float16:
        raise TypeError(
            "float16 attention on CPU is not supported: use float32 or bfloat16 on CPU "
            "(float16 is for GPUs)"
        )


class ChunkedPrepared(PreparedAttention):
    """The block geometry and key padding mask of one batch (no mask tensors are stored)."""

    def __init__(
        self,
        pattern: AttentionPattern,
        key_padding_mask: Tensor | None,
        seq_len: int,
        block_size: int,
        device: torch.device,
    ):
        self.seq_len = seq_len
        self.geometry = BandGeometry(pattern, seq_len, min(block_size, max(seq_len, 1)))
        self.key_padding_mask = key_padding_mask

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        if q.shape[-2] != self.seq_len:
            raise ValueError(f"prepared for length {self.seq_len}, got {q.shape[-2]}")
        check_cpu_dtype(q)
        return band_attention(q, k, v, self.geometry, self.key_padding_mask, dropout_p)


class ChunkedAttention(AttentionBackend):
    """Blocked sliding-window + global attention, linear in L, differentiable everywhere."""

    name = "chunked"

    def prepare(
        self, key_padding_mask: Tensor | None, seq_len: int, device: torch.device
    ) -> ChunkedPrepared:
        return ChunkedPrepared(self.pattern, key_padding_mask, seq_len, self.block_size, device)
