"""Masked-LM metrics summed over masked tokens, so epoch values weight every token equally.

Batch means of batch means would over-weight small batches; this keeps the cross-entropy sum,
the number of correct argmax predictions and the number of masked tokens, reduces them by
summation across processes and derives loss, perplexity and accuracy from the totals.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


class MaskedLMMetric(Metric):
    """Accumulates cross-entropy sum, correct predictions and masked-token count."""

    full_state_update = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "loss_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, loss_sum: Tensor, correct: Tensor, count: Tensor) -> None:
        self.loss_sum += loss_sum.detach().to(torch.float64)
        self.correct += correct.detach()
        self.count += count.detach()

    def compute(self) -> dict[str, Tensor]:
        count = self.count.clamp(min=1)
        loss = (self.loss_sum / count).float()
        return {
            "loss": loss,
            "perplexity": torch.exp(loss),
            "accuracy": self.correct.float() / count.float(),
            "masked_tokens": self.count,
        }


def perplexity(loss: float) -> float:
    """exp(loss), guarded against overflow for diverged runs."""
    return math.exp(min(loss, 80.0))
