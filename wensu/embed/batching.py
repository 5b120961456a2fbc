"""Batch planning for embedding: length-sorted token-budget batches and overlapping windows.

Batches are a deterministic function of the input (sort buffer by sort buffer, longest first,
ties by input order), so a sequence always meets the same batch-mates and padding whatever was
skipped on resume: reruns reproduce an uninterrupted run bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

SPECIAL_TOKENS_PER_SEQUENCE = 2  # <cls> and <eos>


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, extra_tokens: int = SPECIAL_TOKENS_PER_SEQUENCE
) -> list[list[int]]:
    """Batches of indices, longest first, with ``len(batch) * (longest + extra) <= max_tokens``.

    A sequence that alone exceeds the budget forms a batch of one (it cannot be split here).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        padded = lengths[index] + extra_tokens
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        if not current:
            width = padded
        current.append(index)
    if current:
        batches.append(current)
    return batches


def sort_buffers(
    items: Iterable[T], length_of: Callable[[T], int], max_residues: int
) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` holding at most ``max_residues`` residues (at least one item).

    Sorting happens inside a buffer, so memory stays bounded for inputs of any size.
    """
    buffer: list[T] = []
    residues = 0
    for item in items:
        length = length_of(item)
        if buffer and residues + length > max_residues:
            yield buffer
            buffer, residues = [], 0
        buffer.append(item)
        residues += length
    if buffer:
        yield buffer


def plan_windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Residue windows ``[start, end)`` covering ``range(length)``; the last one ends at ``length``.

    Windows start at ``0, stride, 2*stride, ...``; the final window is shifted left so it is full
    size, so every window has ``window`` residues when ``length >= window``.
    """
    if window < 1 or stride < 1 or stride > window:
        raise ValueError(f"need 1 <= stride <= window, got window={window}, stride={stride}")
    if length <= window:
        return [(0, length)]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return [(s, s + window) for s in starts]
