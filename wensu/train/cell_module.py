"""LightningModule for masked-expression pretraining of a :class:`~wensu.model.cell_encoder.
CellEncoder`.

Each training cell has ``mask_prob`` of its (non-pad) genes selected; their expression bins are
replaced by the ``<mask>`` bin (the gene identity stays visible) and the loss is the mean
cross-entropy of the predicted bin at the selected genes. Reseeding per batch (exact resume),
token counting, AdamW and checkpoint progress come from
:class:`~wensu.train.base_module.EncoderModule`, as for the protein module.

Reference: ``bin_frequencies`` (training-split bin frequencies, add-one smoothed) give the loss
of a model that ignores context; validation logs it on the very same masked genes
(``val/baseline_loss``) next to ``val/loss``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from wensu.model.cell_encoder import CELL_KIND, CellEncoder, CellEncoderConfig
from wensu.train.base_module import EncoderModule, dataclass_dict
from wensu.train.metrics import MaskedLMMetric
from wensu.train.settings import MaskingSettings, build_section


def mask_bins(
    bins: Tensor, padding_mask: Tensor, mask_prob: float, mask_bin: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """-> (input bins with the selected genes' bins set to ``mask_bin``, selected [B, L] bool).

    Each non-pad gene is selected independently with probability ``mask_prob``.
    """
    draw = torch.rand(bins.shape, generator=generator, device=bins.device)
    selected = (draw < mask_prob) & ~padding_mask
    return bins.masked_fill(selected, mask_bin), selected


class CellMaskedModule(EncoderModule):
    """Masked-expression pretraining; hyper-parameters are plain python (weights_only-safe).

    ``vocab`` (gene symbols in token order) and ``bin_frequencies`` travel in the checkpoint so
    :func:`wensu.checkpoint.load_cell_checkpoint` can embed new cells with it.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        vocab: Sequence[str],
        bin_frequencies: Sequence[float],
        optim: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        masking: Mapping[str, Any] | None = None,
        seed: int = 0,
        dataset: Mapping[str, Any] | None = None,
    ):
        super().__init__(optim, schedule, seed)
        self.encoder_config = CellEncoderConfig.from_dict(dict(model))
        if len(bin_frequencies) != self.encoder_config.num_bins:
            raise ValueError(
                f"bin_frequencies has {len(bin_frequencies)} values but model.num_bins is "
                f"{self.encoder_config.num_bins}"
            )
        self.masking_settings = build_section(MaskingSettings, masking, "masking")
        self.save_hyperparameters(
            {
                "kind": CELL_KIND,
                "model": self.encoder_config.to_dict(),
                "vocab": [str(g) for g in vocab],
                "bin_frequencies": [float(f) for f in bin_frequencies],
                "optim": dataclass_dict(self.optim_settings),
                "schedule": dataclass_dict(self.schedule_settings),
                "masking": dataclass_dict(self.masking_settings),
                "seed": int(seed),
                "dataset": dict(dataset or {}),
            }
        )
        self.model = CellEncoder(self.encoder_config)
        self.register_buffer(
            "log_bin_frequencies",
            torch.tensor(list(bin_frequencies), dtype=torch.float32).log(),
            persistent=False,
        )
        self.val_metric = MaskedLMMetric()
        self.val_baseline_sum = 0.0

    def masked_step(self, batch: Mapping[str, Tensor], generator: torch.Generator) -> dict:
        """Mask, encode, score the masked genes; ``loss`` is the mean CE over them."""
        padding_mask = batch["padding_mask"]
        inputs, selected = mask_bins(
            batch["bins"],
            padding_mask,
            self.masking_settings.mask_prob,
            self.encoder_config.mask_bin,
            generator,
        )
        out = self.model(batch["genes"], inputs, padding_mask, return_logits=False)
        targets = batch["bins"][selected]
        logits = self.model.bin_head(out["hidden"][selected]).float()
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        count = selected.sum()
        return {
            "loss": loss_sum / count.clamp(min=1),
            "loss_sum": loss_sum.detach(),
            "baseline_sum": -self.log_bin_frequencies[targets].sum(),
            "correct": (logits.detach().argmax(-1) == targets).sum(),
            "count": count,
        }

    def real_tokens(self, batch: Mapping[str, Any]) -> Tensor:
        return ~batch["padding_mask"]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        result = self.masked_step(batch, self.start_training_batch(batch["genes"].device))
        self.finish_training_batch(batch)
        count = result["count"].clamp(min=1)
        self.log("train/loss", result["loss"].detach(), prog_bar=True)
        self.log("train/accuracy", result["correct"] / count)
        self.log("train/baseline_loss", result["baseline_sum"] / count)
        self.log_learning_rate()
        return result["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        generator = self.validation_generator(
            batch["genes"].device, self.masking_settings.val_seed, batch_idx
        )
        result = self.masked_step(batch, generator)
        self.val_metric.update(result["loss_sum"], result["correct"], result["count"])
        self.val_baseline_sum += float(result["baseline_sum"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metric.compute()
        count = max(int(values["masked_tokens"]), 1)
        baseline = torch.tensor(self.val_baseline_sum / count)
        self.val_metric.reset()
        self.val_baseline_sum = 0.0
        self.log("val/loss", values["loss"], sync_dist=True)
        self.log("val/accuracy", values["accuracy"], sync_dist=True)
        self.log("val/baseline_loss", baseline, sync_dist=True)
        self.log("val/loss_ratio_to_baseline", values["loss"] / baseline, sync_dist=True)
        self.log("val/masked_genes", values["masked_tokens"].float(), sync_dist=True)
