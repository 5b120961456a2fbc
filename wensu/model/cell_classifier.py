"""Cell-type classifier: a :class:`~wensu.model.cell_encoder.CellEncoder` + a linear head on the
mean-pooled cell embedding, and its checkpoint (written by ``wensu-train
experiment=cells_finetune``, read by ``wensu-annotate``).

A classifier checkpoint is a Lightning checkpoint whose hyper-parameters carry ``kind:
"cells_classifier"``, the encoder config, the gene vocabulary, the class names, the gene panel
the head was trained on and the tokenisation (bins, ``target_sum``, ``max_genes``); weights live
under ``state_dict["model.encoder.*"]`` and ``state_dict["model.head.*"]``. Loading uses
``weights_only=True`` (:func:`wensu.checkpoint.load_cell_classifier`).
"""

from __future__ import annotations

from torch import Tensor, nn

from wensu.model.cell_encoder import CellEncoder

CLASSIFIER_KIND = "cells_classifier"


class CellClassifier(nn.Module):
    """logits = linear(dropout(layer_norm(mean of the encoder's final hidden states)))."""

    def __init__(self, encoder: CellEncoder, num_classes: int, dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        d = encoder.cfg.d_model
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.LayerNorm(d, eps=encoder.cfg.layer_norm_eps),
            nn.Dropout(dropout),
            nn.Linear(d, num_classes),
        )
        nn.init.normal_(self.head[2].weight, std=encoder.cfg.init_std)
        nn.init.zeros_(self.head[2].bias)

    def forward(self, genes: Tensor, bins: Tensor, padding_mask: Tensor) -> dict[str, Tensor]:
        """``{"logits": [B, classes], "embedding": [B, d]}`` (embedding = pooled cell state)."""
        embedding = self.encoder.cell_embedding(genes, bins, padding_mask)
        return {"logits": self.head(embedding), "embedding": embedding}

    def freeze_below(self, train_layers: int | None) -> None:
        """Train only the last ``train_layers`` transformer layers (+ final LayerNorm + head);
        None trains everything."""
        if train_layers is None:
            return
        encoder = self.encoder
        if not 0 <= train_layers <= len(encoder.layers):
            raise ValueError(
                f"train_layers must be in 0..{len(encoder.layers)} (or all), got {train_layers}"
            )
        frozen = [encoder.gene_embed, encoder.bin_embed, encoder.bin_head]
        frozen += list(encoder.layers[: len(encoder.layers) - train_layers])
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
