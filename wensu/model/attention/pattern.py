"""The attention pattern: the one definition of which key each query may see.

Query i sees key j iff |i - j| <= window, or i < num_global, or j < num_global, and key j is
not padding. `window=None` means every query sees every (non-padding) key. All backends
build their masks from `AttentionPattern.visible`, so they cannot disagree about the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AttentionPattern:
    """Sliding window of half-width `window` plus `num_global` global tokens at the start."""

    window: int | None = None
    num_global: int = 0

    @property
    def is_dense(self) -> bool:
        return self.window is None

    def effective_window(self, seq_len: int) -> int:
        """The window clipped to the sequence: a window >= seq_len - 1 is dense."""
        if self.window is None:
            return max(seq_len - 1, 0)
        return min(self.window, max(seq_len - 1, 0))

    def visible(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        """Boolean tensor (broadcast of q_idx, k_idx): may query q_idx see key k_idx?

        Padding is not part of this rule; backends combine it with the key padding mask.
        """
        if self.window is None:
            return (q_idx >= 0) & (k_idx >= 0)
        near = (q_idx - k_idx).abs() <= self.window
        return near | (q_idx < self.num_global) | (k_idx < self.num_global)

    def dense_mask(self, seq_len: int, key_padding_mask: Tensor | None, device=None) -> Tensor:
        """Materialised [B or 1, 1, L, L] boolean mask (True = may attend), O(L^2) memory.

        `key_padding_mask` is [B, L] with True at padding positions.
        """
        if key_padding_mask is not None:
            device = key_padding_mask.device
        positions = torch.arange(seq_len, device=device, dtype=torch.int32)
        mask = self.visible(positions[:, None], positions[None, :])[None, None]
        if key_padding_mask is not None:
            mask = mask & ~key_padding_mask[:, None, None, :]
        return mask
