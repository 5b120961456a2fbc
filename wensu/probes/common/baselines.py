"""Baselines every probe is compared with: one-hot residues (per-residue tasks), amino-acid and
3-mer composition (sequence-level tasks), and a randomly initialised encoder of the same shape
(all probes; it separates what pretraining learned from what the architecture alone gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from wensu.model import Encoder
from wensu.model.config import EncoderConfig

STANDARD = "ACDEFGHIKLMNPQRSTVWY"
_INDEX = np.full(256, len(STANDARD), dtype=np.int64)  # anything else -> "other"
for _i, _aa in enumerate(STANDARD):
    _INDEX[ord(_aa)] = _i
    _INDEX[ord(_aa.lower())] = _i


def residue_indices(sequence: str) -> np.ndarray:
    """0..19 for the standard amino acids (alphabetical), 20 for anything else."""
    return _INDEX[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


def one_hot(sequence: str) -> np.ndarray:
    """[L, 21] float32 one-hot (20 standard residues + other)."""
    idx = residue_indices(sequence)
    out = np.zeros((len(idx), len(STANDARD) + 1), dtype=np.float32)
    out[np.arange(len(idx)), idx] = 1.0
    return out


def composition(sequence: str, k: int = 1) -> np.ndarray:
    """Frequencies of the 20**k standard k-mers (k-mers holding a non-standard residue skipped)."""
    idx = residue_indices(sequence)
    size = len(STANDARD) ** k
    if len(idx) < k:
        return np.zeros(size, dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(idx, k)
    windows = windows[(windows < len(STANDARD)).all(axis=1)]
    codes = windows @ (len(STANDARD) ** np.arange(k - 1, -1, -1))
    counts = np.bincount(codes, minlength=size).astype(np.float32)
    total = counts.sum()
    return counts / total if total else counts


def composition_features(sequences: Sequence[str], ks: Sequence[int] = (1, 3)) -> np.ndarray:
    """[N, sum 20**k] concatenated k-mer compositions (default: amino acids + 3-mers)."""
    return np.stack([np.concatenate([composition(s, k) for k in ks]) for s in sequences])


def random_init_like(encoder: Encoder, seed: int = 0) -> Encoder:
    """A freshly initialised encoder with the same configuration (seeded, eval mode)."""
    cfg = EncoderConfig.from_dict(encoder.cfg.to_dict())
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        fresh = Encoder(cfg)
    finally:
        torch.random.set_rng_state(state)
    device = next(encoder.parameters()).device
    return fresh.to(device).eval()
