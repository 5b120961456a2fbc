"""Batch assembly: right-padded token tensors from variable-length records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def collate_tokens(
    sequences: Sequence[np.ndarray | torch.Tensor | Sequence[int]],
    pad_idx: int = 1,
    *,
    pad_to_multiple: int = 1,
) -> torch.Tensor:
    """Right-pad 1-D token arrays into a ``LongTensor [B, L]`` filled with ``pad_idx``.

    ``L`` is the longest input, rounded up to ``pad_to_multiple`` (e.g. 8 for tensor cores).
    """
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    rows = [torch.as_tensor(np.asarray(s), dtype=torch.long) for s in sequences]
    for i, row in enumerate(rows):
        if row.dim() != 1:
            raise ValueError(f"sequence {i} must be one-dimensional, got shape {tuple(row.shape)}")
    width = max((row.numel() for row in rows), default=0)
    width = -(-width // pad_to_multiple) * pad_to_multiple
    out = torch.full((len(rows), width), pad_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row
    return out


def collate_records(
    records: Sequence[Mapping[str, Any]], pad_idx: int = 1, *, pad_to_multiple: int = 1
) -> dict[str, Any]:
    """Collate ``ShardedDataset`` records into ``{"tokens", "ids", "lengths"}``.

    ``tokens`` is the padded ``LongTensor [B, L]``; ``ids`` the record ids (list of str);
    ``lengths`` a ``LongTensor [B]`` of tokens per record *including* ``<cls>``/``<eos>``, so
    ``tokens[i, : lengths[i]]`` is exactly record ``i``'s tokens.
    """
    tokens = [r["tokens"] for r in records]
    return {
        "tokens": collate_tokens(tokens, pad_idx, pad_to_multiple=pad_to_multiple),
        "ids": [r["id"] for r in records],
        "lengths": torch.tensor([len(t) for t in tokens], dtype=torch.long),
    }
