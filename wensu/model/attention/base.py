"""Interface every attention backend implements.

A backend is built once per model from an `AttentionPattern`. For each batch the encoder calls
`prepare` once (mask construction is shared by all layers) and then calls the returned
`PreparedAttention` in every layer with queries, keys and values shaped [B, H, L, D]. Queries
arrive already scaled by head_dim**-0.5 (as in ESM-2), so backends apply no further scale.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from wensu.model.attention.pattern import AttentionPattern


class PreparedAttention(ABC):
    """Attention for one batch shape and padding, ready to be applied in every layer."""

    @abstractmethod
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        """Attention output [B, H, L, D]; queries that see no key get zeros."""


class AttentionBackend(ABC):
    """Computes attention under an `AttentionPattern`."""

    name: ClassVar[str]

    def __init__(self, pattern: AttentionPattern, block_size: int = 128):
        self.pattern = pattern
        self.block_size = block_size

    @abstractmethod
    def prepare(
        self, key_padding_mask: Tensor | None, seq_len: int, device: torch.device
    ) -> PreparedAttention:
        """Build the per-batch masks. `key_padding_mask` is [B, L], True at padding."""

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding_mask: Tensor | None = None,
        dropout_p: float = 0.0,
    ) -> Tensor:
        """One-off attention: `prepare` and apply (layers should reuse a prepared instance)."""
        return self.prepare(key_padding_mask, q.shape[-2], q.device)(q, k, v, dropout_p)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pattern}, block_size={self.block_size})"
