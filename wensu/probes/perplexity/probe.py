"""Held-out masked-language-model perplexity, and the unigram baseline at the same positions.

Masked perplexity (not pseudo-perplexity): in each sequence, ``round(mask_prob * n)`` (at least
one) of its ``n`` standard-residue positions are chosen by a generator seeded with
``(seed, sequence index)``, all of them replaced by ``<mask>`` in one forward pass, and
perplexity = exp(mean cross-entropy over every masked position of the set). The choice depends
only on the seed and the sequence, never on batching, so two models are scored on exactly the
same positions. Sequences longer than ``max_length`` residues are cut to their first
``max_length`` (the SCOP domains are at most 858 long, so nothing is cut with the default 1022).

The unigram baseline predicts every masked residue by its frequency in a reference corpus
(add-one smoothed over the 20 standard residues).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from wensu.alphabet import Alphabet
from wensu.embed.batching import token_budget_batches
from wensu.probes.common.baselines import STANDARD, residue_indices
from wensu.progress import progress_bar


@dataclass
class MaskedSet:
    """Token rows with ``<mask>`` applied, and the masked positions' true tokens/residues."""

    inputs: list[np.ndarray]  # token ids incl. <cls>/<eos>
    positions: list[np.ndarray]  # token positions that were masked
    targets: list[np.ndarray]  # true token ids at those positions


def mask_sequences(
    sequences: Sequence[str],
    alphabet: Alphabet,
    *,
    mask_prob: float = 0.15,
    seed: int = 0,
    max_length: int = 1022,
) -> MaskedSet:
    """Deterministically mask each sequence (see module docstring)."""
    standard_ids = np.array([alphabet.index[a] for a in STANDARD])
    out = MaskedSet([], [], [])
    for i, sequence in enumerate(sequences):
        tokens = alphabet.encode(sequence[:max_length])
        candidates = np.flatnonzero(np.isin(tokens, standard_ids))
        n = max(1, round(mask_prob * len(candidates))) if len(candidates) else 0
        rng = np.random.default_rng([seed, i])
        chosen = np.sort(rng.choice(candidates, size=n, replace=False)) if n else candidates
        masked = tokens.copy()
        masked[chosen] = alphabet.mask_idx
        out.inputs.append(masked)
        out.positions.append(chosen)
        out.targets.append(tokens[chosen])
    return out


def masked_nll(
    encoder: torch.nn.Module,
    alphabet: Alphabet,
    masked: MaskedSet,
    *,
    max_tokens: int = 16384,
    device: str = "cpu",
    desc: str = "perplexity",
    show_progress: bool = True,
) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, number of masked positions) under ``encoder``."""
    encoder = encoder.eval()
    total, count = 0.0, 0
    lengths = [len(t) - 2 for t in masked.inputs]
    batches = token_budget_batches(lengths, max_tokens)
    for batch in progress_bar(batches, desc=desc, enabled=show_progress):
        width = max(len(masked.inputs[i]) for i in batch)
        tokens = torch.full((len(batch), width), alphabet.padding_idx, dtype=torch.long)
        for row, i in enumerate(batch):
            tokens[row, : len(masked.inputs[i])] = torch.from_numpy(masked.inputs[i])
        with torch.inference_mode():
            logits = encoder(tokens.to(device))["logits"].float().cpu()
        for row, i in enumerate(batch):
            if len(masked.positions[i]):
                picked = logits[row, torch.from_numpy(masked.positions[i])]
                target = torch.from_numpy(masked.targets[i])
                total += F.cross_entropy(picked, target, reduction="sum").item()
                count += len(target)
    return total, count


def unigram_log_probs(sequences: Iterable[str]) -> np.ndarray:
    """[20] natural-log frequencies of the standard residues, add-one smoothed."""
    counts = np.ones(len(STANDARD))
    for sequence in sequences:
        idx = residue_indices(sequence)
        counts += np.bincount(idx[idx < len(STANDARD)], minlength=len(STANDARD))
    return np.log(counts / counts.sum())


def unigram_nll(log_probs: np.ndarray, alphabet: Alphabet, masked: MaskedSet) -> tuple[float, int]:
    """(summed NLL, count) of the masked residues under a unigram model."""
    token_to_residue = {alphabet.index[a]: i for i, a in enumerate(STANDARD)}
    total, count = 0.0, 0
    for targets in masked.targets:
        idx = np.array([token_to_residue[int(t)] for t in targets], dtype=np.int64)
        total -= float(log_probs[idx].sum())
        count += len(idx)
    return total, count


def perplexity(total_nll: float, count: int) -> float:
    """exp(mean NLL); NaN for an empty set."""
    return math.exp(total_nll / count) if count else float("nan")
