"""LightningModule that fine-tunes a cell encoder into a cell-type classifier.

Loss: cross-entropy weighted per class by ``(n / (K * n_c)) ** class_weight_power`` over the
training cells (power 1 = "balanced", 0 = plain CE), so a 14-cell class is not drowned by a
5,000-cell one. Validation logs the same weighted loss (``val/loss``, which early stopping and
``best.ckpt`` follow) plus accuracy and macro-F1. Dropout reseeding per batch (exact resume),
token counting, AdamW (the one weight-decay rule) and checkpoint progress come from
:class:`~wensu.train.base_module.EncoderModule`, as for the pretraining modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wensu.model.cell_classifier import CLASSIFIER_KIND, CellClassifier
from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig
from wensu.train.base_module import EncoderModule, dataclass_dict


def class_weights(counts: Sequence[int], power: float = 1.0) -> list[float]:
    """``(n / (K * n_c)) ** power`` per class (classes with no cell get weight 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = (counts.sum() / (present.sum() * counts[present])) ** float(power)
    return weights.tolist()


def macro_f1(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over the classes present in ``truth``."""
    scores = []
    for c in np.unique(truth):
        tp = float(((predicted == c) & (truth == c)).sum())
        fp = float(((predicted == c) & (truth != c)).sum())
        fn = float(((predicted != c) & (truth == c)).sum())
        scores.append(2 * tp / max(2 * tp + fp + fn, 1.0))
    return float(np.mean(scores)) if scores else float("nan")


class CellClassifierModule(EncoderModule):
    """Hyper-parameters are plain python (weights_only-safe) and rebuild the classifier."""

    def __init__(
        self,
        model: Mapping[str, Any],
        vocab: Sequence[str],
        classes: Sequence[str],
        panel: Sequence[str],
        tokens: Mapping[str, Any],
        class_weight: Sequence[float],
        optim: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        dropout: float = 0.1,
        train_layers: int | None = None,
        seed: int = 0,
        source: Mapping[str, Any] | None = None,
    ):
        super().__init__(optim, schedule, seed)
        self.encoder_config = CellEncoderConfig.from_dict(dict(model))
        if len(class_weight) != len(classes):
            raise ValueError("class_weight needs one weight per class")
        self.save_hyperparameters(
            {
                "kind": CLASSIFIER_KIND,
                "model": self.encoder_config.to_dict(),
                "vocab": [str(g) for g in vocab],
                "classes": [str(c) for c in classes],
                "panel": [str(g) for g in panel],
                "tokens": dict(tokens),
                "class_weight": [float(w) for w in class_weight],
                "optim": dataclass_dict(self.optim_settings),
                "schedule": dataclass_dict(self.schedule_settings),
                "dropout": float(dropout),
                "train_layers": train_layers,
                "seed": int(seed),
                "source": dict(source or {}),
            }
        )
        self.model = CellClassifier(CellEncoder(self.encoder_config), len(classes), dropout)
        self.model.freeze_below(train_layers)
        self.register_buffer(
            "class_weight", torch.tensor(list(class_weight), dtype=torch.float32), persistent=False
        )
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []

    def real_tokens(self, batch: Mapping[str, Any]) -> Tensor:
        return ~batch["padding_mask"]

    def _loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        out = self.model(batch["genes"], batch["bins"], batch["padding_mask"])
        logits = out["logits"].float()
        return F.cross_entropy(logits, batch["labels"], weight=self.class_weight), logits

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        self.start_training_batch(batch["genes"].device)  # reseeds dropout; no masking here
        loss, logits = self._loss(batch)
        self.finish_training_batch(batch)
        accuracy = (logits.detach().argmax(-1) == batch["labels"]).float().mean()
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/accuracy", accuracy)
        self.log_learning_rate()
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        _, logits = self._loss(batch)
        labels = batch["labels"]
        weights = self.class_weight[labels]
        per_cell = F.cross_entropy(logits, labels, reduction="none") * weights
        self._val.append((per_cell.sum(), weights.sum(), torch.stack([labels, logits.argmax(-1)])))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        loss = sum(v[0] for v in self._val) / sum(v[1] for v in self._val).clamp(min=1e-12)
        pairs = torch.cat([v[2] for v in self._val], dim=1).cpu().numpy()
        self._val.clear()
        truth, predicted = pairs[0], pairs[1]
        self.log("val/loss", loss)
        self.log("val/accuracy", float((truth == predicted).mean()))
        self.log("val/macro_f1", macro_f1(truth, predicted, len(self.hparams["classes"])))
