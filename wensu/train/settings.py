"""Typed, validated views of the plain-dict config sections the training module takes.

The LightningModule stores these sections as plain dicts in its hyper-parameters (so a checkpoint
loads with ``torch.load(weights_only=True)``); these dataclasses check them once, with messages
that name the config key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wensu.train.errors import TrainConfigError
from wensu.train.schedule import DECAYS

T = TypeVar("T")


def build_section(cls: type[T], data: Mapping[str, Any] | None, section: str) -> T:
    """Instantiate dataclass ``cls`` from config section ``section`` (unknown keys are errors)."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainConfigError(f"unknown {section} option(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


def _positive(section: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise TrainConfigError(f"{section}.{name} must be a number {bound}, got {value!r}")


@dataclass
class OptimSettings:
    """AdamW hyper-parameters (``optim`` section). ``fused=None`` picks fused when supported."""

    lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.01
    fused: bool | None = None

    def __post_init__(self) -> None:
        _positive("optim", "lr", self.lr)
        _positive("optim", "eps", self.eps)
        _positive("optim", "weight_decay", self.weight_decay, allow_zero=True)
        betas = list(self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise TrainConfigError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = [float(b) for b in betas]


@dataclass
class ScheduleSettings:
    """Learning-rate schedule (``schedule`` section); ``total_steps=None`` uses max_steps."""

    warmup_steps: int = 2000
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise TrainConfigError(f"schedule.decay must be one of {DECAYS}, got {self.decay!r}")
        _positive("schedule", "warmup_steps", self.warmup_steps, allow_zero=True)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise TrainConfigError(
                f"schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}"
            )
        if self.total_steps is not None:
            _positive("schedule", "total_steps", self.total_steps)


@dataclass
class MaskingSettings:
    """Masked-LM corruption (``masking`` section): selection rate and the validation seed."""

    mask_prob: float = 0.15
    val_seed: int = 20240101

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise TrainConfigError(f"masking.mask_prob must be in (0, 1), got {self.mask_prob!r}")
