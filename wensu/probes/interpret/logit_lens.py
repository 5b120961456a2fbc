"""Logit lens: the model's own read-out (final LayerNorm + LM head) applied to every layer.

Layer 0 is the embedding output, layer i the output of transformer layer i; for those the
final ``emb_layer_norm_after`` is applied before the LM head, as it is for the last layer in
the forward pass. The last layer's read-out is the forward pass's own ``logits``, so the lens
at the top equals the model's predictions exactly.

Per layer we report the mean per-position entropy (nats, over the full 33-token vocabulary) and
the accuracy of predicting the input residue at each position, on the unmasked input and, with
a fixed share of residues replaced by ``<mask>``, at the masked positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.model import Encoder


def layer_logits(encoder: Encoder, tokens: torch.Tensor) -> torch.Tensor:
    """[layers + 1, B, L, vocab] logits of the read-out applied to layers 0..num_layers."""
    hidden = list(range(encoder.num_layers))
    with torch.inference_mode():
        out = encoder(tokens, repr_layers=hidden)
        weight = encoder.embed_tokens.weight
        per_layer = [
            encoder.lm_head(encoder.emb_layer_norm_after(out["representations"][i]), weight)
            for i in hidden
        ]
        return torch.stack([*per_layer, out["logits"]]).float()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def mask_positions(length: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted 0-based positions of ``max(1, round(rate * length))`` distinct residues."""
    count = min(length, max(1, round(rate * length)))
    return torch.randperm(length, generator=generator)[:count].sort().values


@dataclass
class LensSums:
    """Running sums over residues, per layer."""

    entropy: np.ndarray
    correct: np.ndarray
    residues: int = 0
    masked_correct: np.ndarray | None = None
    masked: int = 0

    def summary(self) -> dict[str, list[float]]:
        out = {
            "entropy": (self.entropy / max(self.residues, 1)).tolist(),
            "accuracy_unmasked": (self.correct / max(self.residues, 1)).tolist(),
        }
        if self.masked_correct is not None:
            out["accuracy_masked"] = (self.masked_correct / max(self.masked, 1)).tolist()
        return out


def _batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and (lengths[i] + 2) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def _tokens(alphabet: Alphabet, sequences: Sequence[str]) -> torch.Tensor:
    return torch.from_numpy(alphabet.batch_encode(list(sequences)))


def logit_lens(
    encoder: Encoder,
    alphabet: Alphabet,
    sequences: Sequence[str],
    *,
    mask_rate: float = 0.15,
    seed: int = 0,
    max_tokens: int = 8192,
    profile_count: int = 1,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    """Per-layer mean entropy and residue accuracy (unmasked, and masked at ``mask_rate``).

    Returns ``(summary, profiles)``: ``summary`` maps ``entropy``, ``accuracy_unmasked``,
    ``accuracy_masked`` to one value per layer (0..num_layers); ``profiles`` holds the
    [layers + 1, L] per-position entropy of the first ``profile_count`` sequences (unmasked).
    Sequences must fit the model's context (callers crop them).
    """
    layers = encoder.num_layers + 1
    sums = LensSums(np.zeros(layers), np.zeros(layers))
    sums.masked_correct = np.zeros(layers) if mask_rate > 0 else None
    generator = torch.Generator().manual_seed(seed)
    masks = [mask_positions(len(s), mask_rate, generator) for s in sequences] if mask_rate else []
    profiles: dict[int, np.ndarray] = {}
    for batch in _batches([len(s) for s in sequences], max_tokens):
        tokens = _tokens(alphabet, [sequences[i] for i in batch]).to(device)
        residue = (tokens != alphabet.padding_idx) & (tokens != alphabet.cls_idx)
        residue &= tokens != alphabet.eos_idx
        logits = layer_logits(encoder, tokens)
        ent = entropy(logits)
        hit = logits.argmax(-1) == tokens[None]
        sums.entropy += (ent * residue).sum((1, 2)).cpu().numpy()
        sums.correct += (hit & residue).sum((1, 2)).cpu().numpy()
        sums.residues += int(residue.sum())
        for row, i in enumerate(batch):
            if i < profile_count:
                profiles[i] = ent[:, row, 1 : len(sequences[i]) + 1].cpu().numpy()
        if sums.masked_correct is not None:
            masked = tokens.clone()
            selected = torch.zeros_like(residue)
            for row, i in enumerate(batch):
                selected[row, masks[i] + 1] = True
            masked[selected] = alphabet.mask_idx
            masked_hit = layer_logits(encoder, masked).argmax(-1) == tokens[None]
            sums.masked_correct += (masked_hit & selected).sum((1, 2)).cpu().numpy()
            sums.masked += int(selected.sum())
    return sums.summary(), [profiles[i] for i in sorted(profiles)]
