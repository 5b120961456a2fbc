"""Dense backend: `scaled_dot_product_attention` with the materialised pattern mask (O(L^2))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wensu.model.attention.base import AttentionBackend, PreparedAttention


class DensePrepared(PreparedAttention):
    """Holds the [B|1, 1, L, L] boolean mask (None when every query sees every key)."""

    def __init__(self, mask: Tensor | None):
        self.empty_rows: Tensor | None = None
        if mask is not None:
            has_key = mask.any(dim=-1, keepdim=True)
            if not bool(has_key.all()):
                # A row without any visible key would be NaN in some SDPA kernels; let it see
                # everything and zero its output afterwards.
                self.empty_rows = ~has_key
                mask = mask | self.empty_rows
        self.mask = mask

    def _zero_empty_rows(self, out: Tensor) -> Tensor:
        if self.empty_rows is None:
            return out
        return out.masked_fill(self.empty_rows, 0.0)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.mask, dropout_p=dropout_p, scale=1.0
        )
        return self._zero_empty_rows(out)

    def with_weights(
        self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """Explicit attention that also returns the probabilities [B, H, L, L] (float32)."""
        scores = torch.matmul(q, k.transpose(-1, -2)).float()
        if self.mask is not None:
            scores = scores.masked_fill(~self.mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.empty_rows is not None:
            probs = probs.masked_fill(self.empty_rows, 0.0)
        dropped = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
        return torch.matmul(dropped.to(v.dtype), v), probs


class DenseAttention(AttentionBackend):
    """Reference backend; memory grows as L^2 (the mask), fine up to a few thousand tokens."""

    name = "dense"

    def prepare(
        self, key_padding_mask: Tensor | None, seq_len: int, device: torch.device
    ) -> DensePrepared:
        if self.pattern.is_dense and key_padding_mask is None:
            return DensePrepared(None)
        return DensePrepared(self.pattern.dense_mask(seq_len, key_padding_mask, device))
