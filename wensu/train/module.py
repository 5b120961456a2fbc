"""LightningModule for masked-language-model pretraining of a wensu ``Encoder``.

Per-batch reseeding (exact resume), token counting, AdamW and checkpoint progress come from
:class:`~wensu.train.base_module.EncoderModule`, shared with the cell modules.

The loss is the mean cross-entropy over the masked positions only; the output head runs on those
positions alone (15% of the tokens), and the MoE load-balancing loss (``out["aux_loss"]``,
already weighted by the encoder) is added to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from wensu.alphabet import get_alphabet
from wensu.data.masking import IGNORE_INDEX, mask_tokens
from wensu.model import Encoder
from wensu.model.config import EncoderConfig
from wensu.model.lm_loss import chunked_lm_loss
from wensu.train.base_module import EncoderModule, dataclass_dict, stream_seed
from wensu.train.metrics import MaskedLMMetric
from wensu.train.settings import MaskingSettings, build_section

__all__ = ["MaskedLMModule", "stream_seed"]


class MaskedLMModule(EncoderModule):
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
        super().__init__(optim, schedule, seed)
        self.encoder_config = EncoderConfig.from_dict(dict(model))
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
        self.val_metric = MaskedLMMetric()

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

    def real_tokens(self, batch: Mapping[str, Any]) -> Tensor:
        return batch["tokens"] != self.alphabet.padding_idx

    # ---- training / validation --------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        tokens = batch["tokens"]
        result = self.masked_lm_step(tokens, self.start_training_batch(tokens.device))
        self.finish_training_batch(batch)
        mlm = result["mlm_loss"].detach()
        self.log("train/loss", mlm, prog_bar=True)
        self.log("train/perplexity", torch.exp(mlm.clamp(max=80.0)))
        self.log("train/accuracy", result["correct"] / result["count"].clamp(min=1))
        if self.encoder_config.ffn == "moe":
            self.log("train/aux_loss", result["aux_loss"].detach())
        self.log_learning_rate()
        return result["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        tokens = batch["tokens"]
        generator = self.validation_generator(
            tokens.device, self.masking_settings.val_seed, batch_idx
        )
        result = self.masked_lm_step(tokens, generator)
        self.val_metric.update(result["loss_sum"], result["correct"], result["count"])

    def on_validation_epoch_end(self) -> None:
        values = self.val_metric.compute()
        self.val_metric.reset()
        self.log("val/loss", values["loss"], sync_dist=True)
        self.log("val/perplexity", values["perplexity"], sync_dist=True)
        self.log("val/accuracy", values["accuracy"], sync_dist=True)
        self.log("val/masked_tokens", values["masked_tokens"].float(), sync_dist=True)
