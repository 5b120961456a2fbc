"""Learning-rate schedule: linear warmup, then cosine or linear decay to a floor.

The schedule is a pure function of the optimizer step, so a resumed run (whose scheduler state
holds the step count) continues on exactly the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class WarmupDecay:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Steps ``0 .. warmup_steps - 1`` ramp linearly from ``1 / warmup_steps`` to 1; afterwards the
    multiplier decays (``cosine`` or ``linear``) from 1 at the end of warmup to
    ``min_lr_ratio`` at ``total_steps`` and stays there; ``constant`` keeps 1.
    """

    warmup_steps: int
    total_steps: int
    decay: str = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"schedule.decay must be one of {DECAYS}, got {self.decay!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.total_steps < 1:
            raise ValueError(f"schedule total steps must be >= 1, got {self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        if self.decay == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def build_scheduler(optimizer: Optimizer, schedule: WarmupDecay) -> LambdaLR:
    """A per-step ``LambdaLR`` following ``schedule``."""
    return LambdaLR(optimizer, schedule)
