"""Deterministic train/valid/test assignment and the over-long sequence policy.

A record's split is a pure function of a key digest (the BLAKE2b-128 of its sequence, or of
its cluster representative's sequence) and ``split.seed``: the same sequence lands in the same
split on every run, machine and worker count, and pieces of one long protein stay together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from .config import SPLIT_NAMES

_SCALE = 1 << 64


class SplitAssigner:
    """Maps a key digest to ``"train"``, ``"valid"`` or ``"test"`` by a 64-bit hash."""

    def __init__(self, fractions: Mapping[str, float], seed: int = 0):
        self.seed = int(seed).to_bytes(8, "little", signed=True)
        bounds, total = [], 0.0
        for name in SPLIT_NAMES:
            total += float(fractions[name])
            bounds.append(min(int(round(total * _SCALE)), _SCALE))
        bounds[-1] = _SCALE
        self._bounds = list(zip(bounds, SPLIT_NAMES, strict=True))
        # A bound of 2**64 is above every point, so it never counts in the search below.
        self._search = np.array([b for b in bounds if b < _SCALE], dtype=np.uint64)

    def position(self, key: bytes) -> int:
        """The key's point in [0, 2**64): BLAKE2b-64 of key + seed."""
        return int.from_bytes(hashlib.blake2b(key + self.seed, digest_size=8).digest(), "big")

    def indices(self, keys: Sequence[bytes]) -> np.ndarray:
        """Index into ``SPLIT_NAMES`` of each key's split (the same answer as calling it)."""
        seed, blake2b = self.seed, hashlib.blake2b
        points = b"".join([blake2b(key + seed, digest_size=8).digest() for key in keys])
        # Number of bounds <= point == index of the first bound above the point.
        return np.searchsorted(self._search, np.frombuffer(points, dtype=">u8"), side="right")

    def __call__(self, key: bytes) -> str:
        point = self.position(key)
        for bound, name in self._bounds:
            if point < bound:
                return name
        return SPLIT_NAMES[-1]


def cut_long(record_id: str, sequence: bytes, max_length: int | None, policy: str) -> list:
    """``[(id, sequence)]`` after the over-long policy (``drop`` is decided before this).

    ``crop`` keeps the first ``max_length`` residues under the same id; ``split`` cuts
    ``ceil(L / max_length)`` near-equal pieces (no short tail), named ``ID/start-end``
    (1-based, inclusive), e.g. 2500 residues, max 1000 -> ``ID/1-834``, ``ID/835-1667``,
    ``ID/1668-2500``.
    """
    length = len(sequence)
    if max_length is None or length <= max_length:
        return [(record_id, sequence)]
    if policy == "crop":
        return [(record_id, sequence[:max_length])]
    if policy != "split":
        raise ValueError(f"long_policy {policy!r} cannot cut sequences")
    count = -(-length // max_length)
    size, extra = divmod(length, count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append((f"{record_id}/{start + 1}-{end}", sequence[start:end]))
        start = end
    return pieces
