"""Type and range checks of the numeric and boolean training options, where they are read.

Hydra passes ``trainer.max_steps=abc`` through as the string ``"abc"``; without these checks it
reaches Lightning and ends in a traceback, and some values (``data.num_workers=-3``,
``checkpoint.every_n_train_steps=0``) would silently fall back to a default or never fire.
Each rule names the key, the accepted values and what was given, in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wensu.train.errors import TrainConfigError

PRECISIONS = (
    "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "bf16-true", "16-true",
    "64", "64-true", "transformer-engine",
)  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """An option that must be an integer (or also a float) in ``[low, high]``; ``none`` allows
    null, ``also`` lists extra accepted values (e.g. -1 for "no limit")."""

    low: float | None = None
    high: float | None = None
    floats: bool = False
    none: bool = False
    also: tuple = ()

    def check(self, key: str, value: Any) -> None:
        if value is None and self.none:
            return
        if value in self.also and not isinstance(value, bool):
            return
        kinds = (int, float) if self.floats else (int,)
        number = isinstance(value, kinds) and not isinstance(value, bool)
        if number and (self.low is None or value >= self.low):
            if self.high is None or value <= self.high:
                return
        raise TrainConfigError(f"{key}={value!r}: expected {self.describe()}")

    def describe(self) -> str:
        what = "a number" if self.floats else "an integer"
        bounds = [f">= {self.low:g}" if self.low is not None else ""]
        bounds.append(f"<= {self.high:g}" if self.high is not None else "")
        text = " ".join([what, *[b for b in bounds if b]])
        extras = [repr(v) for v in self.also] + (["null"] if self.none else [])
        return text + (f" (or {', '.join(extras)})" if extras else "")


POSITIVE = Rule(low=1)
COUNT = Rule(low=0)
OPTIONAL_POSITIVE = Rule(low=1, none=True)
FRACTION_OR_COUNT = Rule(low=0, floats=True)  # Lightning: int batches or float fraction <= 1

RULES: dict[str, Rule] = {
    "seed": COUNT,
    "threads": OPTIONAL_POSITIVE,
    "baseline_max_residues": OPTIONAL_POSITIVE,
    "trainer.max_steps": Rule(low=1, also=(-1,)),
    "trainer.max_epochs": Rule(low=1, none=True, also=(-1,)),
    "trainer.num_nodes": POSITIVE,
    "trainer.log_every_n_steps": POSITIVE,
    "trainer.accumulate_grad_batches": POSITIVE,
    "trainer.check_val_every_n_epoch": OPTIONAL_POSITIVE,
    "trainer.num_sanity_val_steps": Rule(low=0, also=(-1,)),
    "trainer.gradient_clip_val": Rule(low=0, floats=True, none=True),
    "trainer.val_check_interval": Rule(low=0, floats=True, none=True),
    "trainer.limit_val_batches": FRACTION_OR_COUNT,
    "trainer.limit_train_batches": FRACTION_OR_COUNT,
    "data.max_tokens": POSITIVE,
    "data.val_max_tokens": OPTIONAL_POSITIVE,
    "data.crop_length": Rule(low=3),  # <cls>, one residue, <eos>
    "data.max_genes": POSITIVE,
    "data.max_cells": OPTIONAL_POSITIVE,
    "data.num_workers": COUNT,
    "data.prefetch_factor": OPTIONAL_POSITIVE,
    "data.max_batch_size": OPTIONAL_POSITIVE,
    "data.pad_to_multiple": POSITIVE,
    "checkpoint.every_n_train_steps": POSITIVE,
    "logging.throughput_window": POSITIVE,
    "schedule.warmup_steps": COUNT,
    "schedule.total_steps": OPTIONAL_POSITIVE,
    "optim.lr": Rule(low=0, floats=True),
    "optim.weight_decay": Rule(low=0, floats=True),
    "masking.mask_prob": Rule(low=0, high=1, floats=True),
    "model.num_layers": POSITIVE,
    "model.d_model": POSITIVE,
    "model.num_heads": POSITIVE,
    "model.ffn_dim": POSITIVE,
    "model.dropout": Rule(low=0, high=1, floats=True),
    "model.attention_dropout": Rule(low=0, high=1, floats=True),
}
BOOLEANS = (
    "resume", "compile", "overwrite", "resume_anyway", "preflight",
    "data.concatenate", "data.pin_memory", "checkpoint.save_best",
    "logging.csv", "logging.tensorboard", "logging.wandb", "logging.loss_curve",
    "logging.sample_ids", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "model.activation_checkpointing", "model.token_dropout",
)  # fmt: skip
FRACTION_KEYS = ("trainer.limit_val_batches", "trainer.limit_train_batches")


def lookup(settings: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(present, value)`` of dotted ``key`` in nested ``settings``."""
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_option_types(settings: Mapping[str, Any]) -> None:
    """Every known numeric/boolean option present in ``settings`` has the right type and range."""
    for key, rule in RULES.items():
        present, value = lookup(settings, key)
        if present:
            rule.check(key, value)
    for key in FRACTION_KEYS:
        present, value = lookup(settings, key)
        if present and isinstance(value, float) and value > 1.0:
            raise TrainConfigError(
                f"{key}={value!r}: a float is a fraction of the batches (<= 1.0); "
                "give an integer for a batch count"
            )
    for key in BOOLEANS:
        present, value = lookup(settings, key)
        if present and not isinstance(value, bool):
            raise TrainConfigError(f"{key}={value!r}: expected true or false")
    present, precision = lookup(settings, "trainer.precision")
    if present and str(precision) not in PRECISIONS:
        raise TrainConfigError(
            f"trainer.precision={precision!r}: expected one of {', '.join(PRECISIONS)}"
        )
