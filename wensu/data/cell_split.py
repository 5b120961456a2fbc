"""Which split a cell belongs to: holdout datasets and donors first, else a keyed hash.

Preprocessing routes cells to train/valid/test with it, and the cell-type probe reproduces a
split with it, so both agree cell by cell for the same fractions and seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from wensu.data.shards import SPLITS

_SCALE = 1 << 64


class SplitRouter:
    """A cell's split: holdout datasets/donors first, else a BLAKE2b-64 hash of its key."""

    def __init__(
        self,
        fractions: Mapping[str, float],
        seed: int,
        *,
        holdout_datasets: Sequence[str] = (),
        holdout_donors: Sequence[str] = (),
        holdout_split: str = "test",
    ):
        self.seed = int(seed).to_bytes(8, "little", signed=False)
        total, self._bounds = 0.0, []
        for name in SPLITS:
            total += float(fractions[name])
            self._bounds.append(min(int(round(total * _SCALE)), _SCALE))
        self._bounds[-1] = _SCALE
        self.holdout_datasets = {str(d) for d in holdout_datasets}
        self.holdout_donors = {str(d) for d in holdout_donors}
        self.holdout_split = holdout_split

    def split_of_key(self, key: str) -> str:
        """Split of a stable cell key ``"<dataset>/<cell id>"``."""
        digest = hashlib.blake2b(key.encode("utf-8") + self.seed, digest_size=8).digest()
        point = int.from_bytes(digest, "big")
        return next(name for bound, name in zip(self._bounds, SPLITS, strict=True) if point < bound)

    def __call__(self, dataset: str, cell_ids: Sequence[str], donors: Sequence[str]) -> np.ndarray:
        if dataset in self.holdout_datasets:
            return np.full(len(cell_ids), self.holdout_split, dtype=object)
        out = np.array([self.split_of_key(f"{dataset}/{c}") for c in cell_ids], dtype=object)
        if self.holdout_donors:
            out[np.isin(np.asarray(donors, dtype=str), list(self.holdout_donors))] = (
                self.holdout_split
            )
        return out
