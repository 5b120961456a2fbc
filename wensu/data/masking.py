"""BERT-style masked-language-model corruption of token batches."""

from __future__ import annotations

import torch

from wensu.alphabet import Alphabet

IGNORE_INDEX = -100


def mask_tokens(
    tokens: torch.Tensor,
    alphabet: Alphabet,
    *,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``tokens [B, L]`` for MLM; returns ``(inputs, labels)`` without touching ``tokens``.

    Each non-special position (any residue symbol; never ``<cls> <pad> <eos> <unk> <null_1>
    <mask>``) is selected independently with probability ``mask_prob``. A selected position
    becomes ``<mask>`` with probability 0.8, a residue drawn uniformly from the 20 standard
    residues with probability 0.1, and stays unchanged with probability 0.1. ``labels`` holds the
    original token at selected positions and ``IGNORE_INDEX`` (-100) elsewhere. ``generator``
    must live on ``tokens.device``; with it the result is reproducible.
    """
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a LongTensor, got {tokens.dtype}")
    device = tokens.device
    specials = torch.as_tensor(alphabet.special_indices, device=device)
    residues = torch.as_tensor(alphabet.residue_indices, device=device)

    eligible = ~torch.isin(tokens, specials)
    draw = torch.rand(tokens.shape, generator=generator, device=device)
    selected = eligible & (draw < mask_prob)
    action = torch.rand(tokens.shape, generator=generator, device=device)
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_pick = torch.randint(residues.numel(), tokens.shape, generator=generator, device=device)

    inputs = tokens.clone()
    inputs[to_mask] = alphabet.mask_idx
    inputs[to_random] = residues[random_pick[to_random]]
    labels = torch.full_like(tokens, IGNORE_INDEX)
    labels[selected] = tokens[selected]
    return inputs, labels
