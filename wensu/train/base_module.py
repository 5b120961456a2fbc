"""What every wensu training module shares: the LightningModule base of the protein masked-LM,
cell masked-expression and cell-classifier modules.

A subclass builds ``self.model`` and says which positions of a batch are real tokens
(:meth:`EncoderModule.real_tokens`); the base owns the rest, once for every modality:

- **Randomness**: before each training batch the global torch generator (dropout) and a device
  generator (masking) are reseeded from ``(seed, rank, batch counter)``, as fairseq does per
  update. A resumed run therefore draws exactly the masks and dropout of an uninterrupted one, on
  any number of ranks; validation masks depend only on ``(val_seed, rank, batch index)``.
- **Progress**: batches trained and non-pad tokens seen over the whole run (all ranks, all
  resumed sessions), stored in the checkpoint under ``"wensu"``.
- **Optimisation**: AdamW with the warmup/decay schedule; weight decay by one rule
  (:func:`weight_decay_groups`) for every module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from wensu.train.schedule import WarmupDecay, build_scheduler
from wensu.train.settings import OptimSettings, ScheduleSettings, build_section

# Distinct random streams derived from the same seed.
STREAM_MASK, STREAM_DROPOUT, STREAM_VAL = 1, 2, 3
_NO_DECAY_NAMES = ("bias", "b1", "b2")
CHECKPOINT_KEY = "wensu"


def stream_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (non-negative ints) through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


class EncoderModule(LightningModule):
    """Base of the wensu training modules; see the module docstring for what it owns."""

    model: torch.nn.Module

    def __init__(
        self, optim: Mapping[str, Any] | None, schedule: Mapping[str, Any] | None, seed: int
    ):
        super().__init__()
        self.optim_settings = build_section(OptimSettings, optim, "optim")
        self.schedule_settings = build_section(ScheduleSettings, schedule, "schedule")
        self.seed = int(seed)
        self.batches_trained = 0  # training batches run over the whole run (all sessions)
        # Non-pad tokens trained on, all ranks: a python int (single process) plus a device
        # tensor summed across ranks (DDP), so counting never waits for the device.
        self._tokens_host = 0
        self._tokens_device: Tensor | None = None
        self._generators: dict[torch.device, torch.Generator] = {}

    # ---- what a subclass says -----------------------------------------------------------------

    def real_tokens(self, batch: Mapping[str, Any]) -> Tensor:
        """Boolean mask of the batch's non-pad positions."""
        raise NotImplementedError

    # ---- randomness ---------------------------------------------------------------------------

    def generator(self, device: torch.device, seed: int) -> torch.Generator:
        """This module's generator for ``device`` (made on first use), reseeded to ``seed``."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        generator.manual_seed(seed)
        return generator

    def start_training_batch(self, device: torch.device) -> torch.Generator:
        """Reseed dropout for this training batch; -> its masking generator."""
        rank, counter = self.global_rank, self.batches_trained
        torch.manual_seed(stream_seed(self.seed, STREAM_DROPOUT, rank, counter))
        return self.generator(device, stream_seed(self.seed, STREAM_MASK, rank, counter))

    def validation_generator(self, device: torch.device, val_seed: int, batch_idx: int):
        """The masking generator of validation batch ``batch_idx`` (same in every run)."""
        seed = stream_seed(val_seed, STREAM_VAL, self.global_rank, batch_idx)
        return self.generator(device, seed)

    # ---- progress -----------------------------------------------------------------------------

    def finish_training_batch(self, batch: Mapping[str, Any]) -> None:
        """Count the batch and its non-pad tokens (summed over ranks under DDP)."""
        self.batches_trained += 1
        if self.trainer is not None and self.trainer.world_size > 1:
            local = self.real_tokens(batch).sum().float()
            total = self.trainer.strategy.reduce(local, reduce_op="sum").long()
            previous = self._tokens_device
            self._tokens_device = total if previous is None else previous + total
        elif batch.get("num_tokens") is not None:
            self._tokens_host += int(batch["num_tokens"])
        else:
            self._tokens_host += int(self.real_tokens(batch).sum())

    @property
    def tokens_seen(self) -> int:
        """Non-pad tokens trained on so far, over all ranks and resumed sessions."""
        device = int(self._tokens_device) if self._tokens_device is not None else 0
        return self._tokens_host + device

    def log_learning_rate(self) -> None:
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], prog_bar=True)

    # ---- optimisation and checkpoint state -----------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(self, *weight_decay_groups(self.model))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": 1,
            "batches_trained": int(self.batches_trained),
            "tokens_seen": int(self.tokens_seen),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY, {})
        self.batches_trained = int(state.get("batches_trained", 0))
        self._tokens_host, self._tokens_device = int(state.get("tokens_seen", 0)), None


def weight_decay_groups(model: torch.nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """``(decay, no_decay)`` trainable parameters, the one rule every wensu module uses: no
    weight decay on vectors (biases, LayerNorm weights) nor on parameters named ``bias``,
    ``b1`` or ``b2`` (the MoE experts' stacked 2-D biases); frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        (no_decay if param.ndim < 2 or leaf in _NO_DECAY_NAMES else decay).append(param)
    return decay, no_decay


def adamw_with_schedule(
    module: LightningModule, decay: list[Tensor], no_decay: list[Tensor]
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer for a module with ``optim_settings`` and
    ``schedule_settings``: AdamW (weight decay on ``decay`` only) with the warmup/decay
    schedule stepped per optimizer step. The schedule lasts ``schedule.total_steps``, else the
    trainer's ``max_steps``, else the trainer's estimate (the trainer is only asked then)."""
    optim, schedule = module.optim_settings, module.schedule_settings
    if schedule.total_steps:
        total = int(schedule.total_steps)
    elif module.trainer.max_steps and module.trainer.max_steps > 0:
        total = int(module.trainer.max_steps)
    else:
        total = max(int(module.trainer.estimated_stepping_batches), 1)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = adamw(groups, optim)
    lr_schedule = WarmupDecay(
        warmup_steps=int(schedule.warmup_steps),
        total_steps=total,
        decay=schedule.decay,
        min_lr_ratio=float(schedule.min_lr_ratio),
    )
    scheduler = build_scheduler(optimizer, lr_schedule)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }


def dataclass_dict(settings: Any) -> dict[str, Any]:
    """Plain dict of a settings dataclass (lists stay lists)."""
    return dataclasses.asdict(settings)


def adamw(groups: list[dict[str, Any]], settings: OptimSettings) -> torch.optim.AdamW:
    """AdamW; ``fused=None`` picks the fused kernel where the parameters' device has it."""
    kwargs = {"lr": settings.lr, "betas": tuple(settings.betas), "eps": settings.eps}
    params = [p for g in groups for p in g["params"]]
    fused = settings.fused
    if fused is None:
        fused = bool(params) and all(
            p.device.type in ("cuda", "cpu") and p.dtype in (torch.float32, torch.bfloat16)
            for p in params
        )
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            if settings.fused:
                raise
    return torch.optim.AdamW(groups, foreach=True, **kwargs)
