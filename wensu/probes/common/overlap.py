"""Train/test leakage control: flag training sequences that equal a test sequence, contain one,
or are contained in one.

Substring checks search one separator-joined string per side (``str.find`` runs in C), so
thousands of training chains are screened against hundreds of test chains in about a second.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SEPARATOR = "|"  # not a residue symbol, so no match can span two sequences


@dataclass(frozen=True)
class OverlapReport:
    """Counts of training sequences flagged because of a test sequence."""

    exact: int
    substring: int

    @property
    def total(self) -> int:
        return self.exact + self.substring


def _joined(sequences: Sequence[str]) -> tuple[str, list[int]]:
    starts, position = [], 0
    for s in sequences:
        starts.append(position)
        position += len(s) + 1
    return _SEPARATOR.join(sequences), starts


def _containing(needle: str, haystack: str, starts: list[int]) -> Iterable[int]:
    """Indices of the joined sequences that contain ``needle``."""
    position = haystack.find(needle)
    while position >= 0:
        index = bisect.bisect_right(starts, position) - 1
        yield index
        next_start = starts[index + 1] if index + 1 < len(starts) else len(haystack)
        position = haystack.find(needle, next_start)


def overlapping_mask(
    train: Sequence[str], test: Iterable[str], min_substring: int = 30
) -> tuple[list[bool], OverlapReport]:
    """Flag each training sequence that overlaps a test sequence.

    A training sequence overlaps when it equals a test sequence (exact), or when one contains the
    other and the contained one has at least ``min_substring`` residues (substring). Returns a
    list parallel to ``train`` (True = remove) and the counts.
    """
    upper_train = [s.upper() for s in train]
    test_set = {s.upper() for s in test}
    exact = [s in test_set for s in upper_train]
    substring = [False] * len(upper_train)
    train_joined, train_starts = _joined(upper_train)
    for t in test_set:
        if len(t) >= min_substring:
            for index in _containing(t, train_joined, train_starts):
                substring[index] = True
    test_joined = _SEPARATOR.join(sorted(test_set))
    for index, s in enumerate(upper_train):
        if len(s) >= min_substring and not substring[index] and s in test_joined:
            substring[index] = True
    flags = [e or s for e, s in zip(exact, substring, strict=True)]
    n_exact = sum(exact)
    return flags, OverlapReport(exact=n_exact, substring=sum(flags) - n_exact)
