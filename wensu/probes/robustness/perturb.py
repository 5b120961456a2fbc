"""Sequence perturbations for the robustness probe, each with the alignment of its residues to
the clean proteins, so embeddings and labels can be compared residue by residue.

A :class:`Perturbed` input is one sequence plus ``segments``: ``(protein, clean_start,
input_start, length)`` runs of residues that are the same positions of a clean protein
(substituted or X-masked positions keep their alignment; they are what changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STANDARD = "ACDEFGHIKLMNPQRSTVWY"


@dataclass(frozen=True)
class Perturbed:
    """A perturbed input and which clean residues its residues are."""

    sequence: str
    segments: tuple[tuple[int, int, int, int], ...]  # (protein, clean_start, input_start, length)
    changed: int = 0  # residues substituted or masked


def chosen_positions(length: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``round(rate * length)`` distinct sorted positions (none for rate 0)."""
    if not 0 <= rate <= 1:
        raise ValueError(f"perturbation rate must be in [0, 1], got {rate}")
    count = round(rate * length)
    return np.sort(rng.choice(length, size=count, replace=False)) if count else np.zeros(0, int)


def substitute(sequence: str, rate: float, rng: np.random.Generator, protein: int = 0) -> Perturbed:
    """Replace ``round(rate * L)`` random residues by a different standard residue."""
    residues = list(sequence)
    positions = chosen_positions(len(residues), rate, rng)
    for p in positions:
        options = [aa for aa in STANDARD if aa != residues[p].upper()]
        residues[p] = options[rng.integers(len(options))]
    return Perturbed("".join(residues), ((protein, 0, 0, len(residues)),), len(positions))


def mask_with_x(
    sequence: str, rate: float, rng: np.random.Generator, protein: int = 0
) -> Perturbed:
    """Replace ``round(rate * L)`` random residues by ``X`` (unknown residue)."""
    residues = list(sequence)
    positions = chosen_positions(len(residues), rate, rng)
    for p in positions:
        residues[p] = "X"
    return Perturbed("".join(residues), ((protein, 0, 0, len(residues)),), len(positions))


def truncate(sequence: str, fraction: float, end: str, protein: int = 0) -> Perturbed:
    """Remove ``round(fraction * L)`` residues from the N or C terminus (at least one is kept)."""
    if end not in ("N", "C"):
        raise ValueError(f"truncation end must be 'N' or 'C', got {end!r}")
    if not 0 <= fraction < 1:
        raise ValueError(f"truncation fraction must be in [0, 1), got {fraction}")
    length = len(sequence)
    cut = min(round(fraction * length), length - 1)
    kept = length - cut
    if end == "N":
        return Perturbed(sequence[cut:], ((protein, cut, 0, kept),), cut)
    return Perturbed(sequence[:kept], ((protein, 0, 0, kept),), cut)


def concatenate(sequences: Sequence[str], proteins: Sequence[int]) -> Perturbed:
    """One long input made of the given proteins end to end (no linker)."""
    segments, start = [], 0
    for sequence, protein in zip(sequences, proteins, strict=True):
        segments.append((protein, 0, start, len(sequence)))
        start += len(sequence)
    return Perturbed("".join(sequences), tuple(segments), 0)


def concatenation_groups(count: int, size: int) -> list[list[int]]:
    """Consecutive groups of ``size`` protein indices out of ``count`` (remainder dropped)."""
    return [list(range(i, i + size)) for i in range(0, count - size + 1, size)]
