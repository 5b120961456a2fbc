"""Masked-LM loss computed in token chunks: never the full [tokens, vocab] logits with grad.

Each chunk of (hidden row, target) pairs goes through the LM head and a float32
cross-entropy under activation checkpointing, so backward keeps only the chunk's input rows
and recomputes its head activations (dense, GELU, layer norm, logits) one chunk at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from wensu.model.encoder import Encoder

# Rows per chunk: the head's activations for 4,096 rows of ESM-2 8M are ~20 MB.
LOSS_CHUNK_TOKENS = 4096


def _chunk_loss(encoder: Encoder, hidden: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    logits = encoder.lm_head(hidden, encoder.embed_tokens.weight)
    # At least float32 (half-precision logits lose the loss), float64 stays float64.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    return loss_sum, (logits.detach().argmax(-1) == targets).sum()


def chunked_lm_loss(
    encoder: Encoder, hidden: Tensor, targets: Tensor, chunk_tokens: int = LOSS_CHUNK_TOKENS
) -> tuple[Tensor, Tensor]:
    """(summed cross-entropy, number of argmax hits) of `hidden` [N, d] against `targets` [N].

    Rows are the positions the loss is taken over (e.g. the masked ones); the sum is
    differentiable, the hit count is not.
    """
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero, torch.zeros((), dtype=torch.long, device=hidden.device)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    losses, hits = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        rows, wanted = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        if recompute and hidden.shape[0] > chunk_tokens:
            loss, hit = checkpoint(_chunk_loss, encoder, rows, wanted, use_reentrant=False)
        else:
            loss, hit = _chunk_loss(encoder, rows, wanted)
        losses.append(loss)
        hits.append(hit)
    return torch.stack(losses).sum(), torch.stack(hits).sum()
