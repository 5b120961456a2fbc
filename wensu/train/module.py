"""LightningModule for masked-language-model pretraining of a wensu ``Encoder``.

Randomness is a pure function of (seed, rank, batch counter): before each training batch the
global torch generator (dropout) and a device generator (masking) are reseeded from it, as
fairseq does per update. A resumed run therefore draws exactly the masks and dropout of an
uninterrupted one, on any number of ranks, and validation masks depend only on
(``masking.val_seed``, rank, batch index), so validation losses compare across runs.

The loss is the mean cross-entropy over the masked positions only; the output head runs on those
positions alone (15% of the tokens), and the MoE load-balancing loss (``out["aux_loss"]``,
already weighted by the encoder) is added to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from wensu.alphabet import get_alphabet
from wensu.data.masking import IGNORE_INDEX, mask_tokens
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
from wensu.model.lm_loss import chunked_lm_loss
from wensu.train.metrics import MaskedLMMetric
from wensu.train.schedule import WarmupDecay, build_scheduler
from wensu.train.settings import (
    MaskingSettings,
    OptimSettings,
    ScheduleSettings,
    build_section,
)

# Distinct streams derived from the same seed.
_STREAM_MASK, _STREAM_DROPOUT, _STREAM_VAL = 1, 2, 3
_NO_DECAY_NAMES = ("bias", "b1", "b2")
CHECKPOINT_KEY = "wensu"


def stream_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (non-negative ints) through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


class MaskedLMModule(LightningModule):
    """Masked-LM pretraining: 15% of residues selected (80/10/10), loss on those only.

    Hyper-parameters are plain dicts (``model`` is ``EncoderConfig.to_dict()``), so checkpoints
    load with ``torch.load(weights_only=True)``; ``max_length`` records the training context
    in residues for downstream tools.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        optim: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        masking: Mapping[str, Any] | None = None,
        seed: int = 0,
        max_length: int | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.encoder_config = EncoderConfig.from_dict(dict(model))
        self.optim_settings = build_section(OptimSettings, optim, "optim")
        self.schedule_settings = build_section(ScheduleSettings, schedule, "schedule")
        self.masking_settings = build_section(MaskingSettings, masking, "masking")
        self.save_hyperparameters(
            {
                "model": self.encoder_config.to_dict(),
                "optim": dataclass_dict(self.optim_settings),
                "schedule": dataclass_dict(self.schedule_settings),
                "masking": dataclass_dict(self.masking_settings),
                "seed": int(seed),
                "max_length": None if max_length is None else int(max_length),
                "compile": bool(compile),
            }
        )
        self.model = Encoder(self.encoder_config)
        if compile:
            self.model.compile()
        self.alphabet = get_alphabet()
        self.seed = int(seed)
        self.train_metric = MaskedLMMetric()
        self.val_metric = MaskedLMMetric()
        self.batches_trained = 0  # training batches run over the whole run (all sessions)
        # Non-pad tokens trained on, all ranks: a python int (single process) plus a device
        # tensor summed across ranks (DDP), so counting never waits for the device.
        self._tokens_host = 0
        self._tokens_device: Tensor | None = None
        self._generators: dict[torch.device, torch.Generator] = {}

    # ---- loss -----------------------------------------------------------------------------

    def forward(self, tokens: Tensor) -> dict[str, Tensor]:
        return self.model(tokens)

    def masked_lm_step(self, tokens: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Mask ``tokens``, run the encoder; loss sums over the masked positions."""
        inputs, labels = mask_tokens(
            tokens, self.alphabet, mask_prob=self.masking_settings.mask_prob, generator=generator
        )
        last = self.encoder_config.num_layers
        out = self.model(inputs, repr_layers=(last,), return_logits=False)
        selected = labels != IGNORE_INDEX
        targets = labels[selected]
        # Head + cross-entropy in token chunks: no [masked, vocab] logits kept for backward.
        loss_sum, correct = chunked_lm_loss(
            self.model, out["representations"][last][selected], targets
        )
        count = selected.sum()
        mlm_loss = loss_sum / count.clamp(min=1)
        aux_loss = out.get("aux_loss")
        if aux_loss is None:
            aux_loss = mlm_loss.new_zeros(())
        return {
            "loss": mlm_loss + aux_loss,
            "mlm_loss": mlm_loss,
            "aux_loss": aux_loss,
            "loss_sum": loss_sum.detach(),
            "correct": correct,
            "count": count,
        }

    def _generator(self, device: torch.device, seed: int) -> torch.Generator:
        return seeded_generator(self._generators, device, seed)

    # ---- training / validation --------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        tokens = batch["tokens"]
        rank, counter = self.global_rank, self.batches_trained
        torch.manual_seed(stream_seed(self.seed, _STREAM_DROPOUT, rank, counter))
        generator = self._generator(
            tokens.device, stream_seed(self.seed, _STREAM_MASK, rank, counter)
        )
        result = self.masked_lm_step(tokens, generator)
        self.batches_trained += 1
        self._count_tokens(tokens, batch.get("num_tokens"))
        mlm = result["mlm_loss"].detach()
        self.log("train/loss", mlm, prog_bar=True)
        self.log("train/perplexity", torch.exp(mlm.clamp(max=80.0)))
        self.log("train/accuracy", result["correct"] / result["count"].clamp(min=1))
        if self.encoder_config.ffn == "moe":
            self.log("train/aux_loss", result["aux_loss"].detach())
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], prog_bar=True)
        return result["loss"]

    def _count_tokens(self, tokens: Tensor, num_tokens: int | None) -> None:
        if self.trainer is not None and self.trainer.world_size > 1:
            local = (tokens != self.alphabet.padding_idx).sum().float()
            total = self.trainer.strategy.reduce(local, reduce_op="sum").long()
            if self._tokens_device is None:
                self._tokens_device = total
            else:
                self._tokens_device = self._tokens_device + total
        elif num_tokens is not None:
            self._tokens_host += int(num_tokens)
        else:
            self._tokens_host += int((tokens != self.alphabet.padding_idx).sum())

    @property
    def tokens_seen(self) -> int:
        """Non-pad tokens trained on so far, over all ranks and resumed sessions."""
        device = int(self._tokens_device) if self._tokens_device is not None else 0
        return self._tokens_host + device

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        tokens = batch["tokens"]
        seed = stream_seed(self.masking_settings.val_seed, _STREAM_VAL, self.global_rank, batch_idx)
        result = self.masked_lm_step(tokens, self._generator(tokens.device, seed))
        self.val_metric.update(result["loss_sum"], result["correct"], result["count"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metric.compute()
        self.val_metric.reset()
        self.log("val/loss", values["loss"], sync_dist=True)
        self.log("val/perplexity", values["perplexity"], sync_dist=True)
        self.log("val/accuracy", values["accuracy"], sync_dist=True)
        self.log("val/masked_tokens", values["masked_tokens"].float(), sync_dist=True)

    # ---- optimisation -----------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_schedule(self, *weight_decay_groups(self.model))

    # ---- checkpoint state -------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_progress(checkpoint, self.batches_trained, self.tokens_seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.batches_trained, self._tokens_host = load_progress(checkpoint)
        self._tokens_device = None


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


def save_progress(checkpoint: dict[str, Any], batches_trained: int, tokens_seen: int) -> None:
    """Store the run's batch and token counters under ``checkpoint[CHECKPOINT_KEY]``."""
    checkpoint[CHECKPOINT_KEY] = {
        "format_version": 1,
        "batches_trained": int(batches_trained),
        "tokens_seen": int(tokens_seen),
    }


def load_progress(checkpoint: Mapping[str, Any]) -> tuple[int, int]:
    """``(batches_trained, tokens_seen)`` stored by :func:`save_progress` (0s when absent)."""
    state = checkpoint.get(CHECKPOINT_KEY, {})
    return int(state.get("batches_trained", 0)), int(state.get("tokens_seen", 0))


def seeded_generator(
    generators: dict[torch.device, torch.Generator], device: torch.device, seed: int
) -> torch.Generator:
    """The generator cached in ``generators`` for ``device`` (made on first use), reseeded."""
    generator = generators.get(device)
    if generator is None:
        generator = generators[device] = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


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
    optimizer = _adamw(groups, optim)
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


def _adamw(groups: list[dict[str, Any]], settings: OptimSettings) -> torch.optim.AdamW:
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
