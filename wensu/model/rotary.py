"""Rotary position embeddings exactly as ESM-2 applies them (no parameters).

ESM-2 rotates the first and second halves of each head dimension against each other
(`rotate_half`), with inverse frequencies 1 / base^(2i / head_dim), applied to the already
scaled queries and to the keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def inverse_frequencies(head_dim: int, base: float = 10000.0, device=None) -> Tensor:
    """1 / base^(arange(0, head_dim, 2) / head_dim), float32."""
    exponents = torch.arange(0, head_dim, 2, device=device).float() / head_dim
    return 1.0 / (base**exponents)


def rotary_tables(
    seq_len: int,
    head_dim: int,
    base: float = 10000.0,
    device=None,
    inv_freq: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables [seq_len, head_dim] (float32) for positions 0..seq_len-1.

    `inv_freq` overrides the computed frequencies (e.g. a checkpoint's stored buffer).
    """
    if inv_freq is None:
        inv_freq = inverse_frequencies(head_dim, base, device)
    else:
        inv_freq = torch.tensor(list(inv_freq), dtype=torch.float32, device=device)
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [..., L, head_dim] by position; computed in float32, returned in x's dtype."""
    rotated = x.float() * cos + rotate_half(x.float()) * sin
    return rotated.to(x.dtype)
