"""Cell encoder: a cell is a *set* of (gene, expression bin) tokens read by wensu's transformer.

Input embedding = gene-identity embedding + expression-bin embedding (summed); then the same
pre-LN :class:`wensu.model.layers.TransformerLayer` stack and attention backends as the protein
:class:`wensu.model.Encoder`, a final LayerNorm and a bin-prediction head (masked-expression
pretraining: the bins of some genes are replaced by a ``<mask>`` bin and predicted).

Genes have no order, so rotary tables are the identity (cos = 1, sin = 0): with dense attention
the encoder is permutation-equivariant and :meth:`CellEncoder.cell_embedding` permutation-
invariant. A windowed pattern (``attention.window``) makes genes attend to their neighbours in
the stored order (gene id, or expression rank when preprocessing orders by rank) -- useful only
for very long cells; the default is dense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from wensu.cell_vocab import NUM_SPECIAL, PAD_IDX
from wensu.model.attention import AttentionPattern, build_backend
from wensu.model.config import AttentionConfig, EncoderConfig, PlainDictConfig, _check_int
from wensu.model.layers import TransformerLayer, gelu

CELL_KIND = "cells"
MODEL_PREFIX = "model."


class CellCheckpointError(ValueError):
    """A cell checkpoint cannot be read or is not a cell model; the message names the file."""


@dataclass
class CellEncoderConfig(PlainDictConfig):
    """Shape of a :class:`CellEncoder`.

    ``vocab_size`` counts the gene vocabulary's 5 special tokens plus its genes (``len(vocab)``
    in ``vocab.json`` terms + 5). ``num_bins`` is the number of expression-bin *values* in the
    data (preprocessing's ``binning.num_bins`` + 1, since bin 0 = measured, not expressed);
    the extra input bin id ``num_bins`` is the ``<mask>`` bin. ``max_genes`` is the most genes
    one cell contributes per forward pass (see :func:`select_genes`).
    """

    config_name: ClassVar[str] = "cell model config"

    vocab_size: int = 20000
    num_bins: int = 9
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 8
    ffn_dim: int = 512
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    max_genes: int = 512
    activation_checkpointing: bool = False
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        self.attention = AttentionConfig.coerce(self.attention)
        _check_int("vocab_size", self.vocab_size, NUM_SPECIAL + 1)
        _check_int("num_bins", self.num_bins, 2)
        _check_int("max_genes", self.max_genes, 1)
        # The transformer fields are checked by EncoderConfig (same names, same rules).
        self.layer_config()

    def layer_config(self) -> EncoderConfig:
        """The :class:`EncoderConfig` whose transformer fields build the shared layers."""
        return EncoderConfig(
            num_layers=self.num_layers,
            d_model=self.d_model,
            num_heads=self.num_heads,
            ffn_dim=self.ffn_dim,
            vocab_size=self.vocab_size,
            padding_idx=PAD_IDX,
            mask_idx=NUM_SPECIAL - 1,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            token_dropout=False,
            layer_norm_eps=self.layer_norm_eps,
            init_std=self.init_std,
            activation_checkpointing=self.activation_checkpointing,
            attention=self.attention,
        )

    @property
    def mask_bin(self) -> int:
        return self.num_bins


class BinHead(nn.Module):
    """bin logits = linear(layer_norm(gelu(dense(x))))."""

    def __init__(self, d_model: int, num_bins: int, eps: float = 1e-5):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.out = nn.Linear(d_model, num_bins)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.layer_norm(gelu(self.dense(x))))


class CellEncoder(nn.Module):
    """Gene + bin embeddings -> wensu transformer layers -> LayerNorm -> bin head."""

    def __init__(self, cfg: CellEncoderConfig):
        super().__init__()
        self.cfg = cfg
        layer_cfg = cfg.layer_config()
        self.gene_embed = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD_IDX)
        self.bin_embed = nn.Embedding(cfg.num_bins + 1, cfg.d_model)
        self.layers = nn.ModuleList(TransformerLayer(layer_cfg) for _ in range(cfg.num_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.bin_head = BinHead(cfg.d_model, cfg.num_bins, cfg.layer_norm_eps)
        self.pattern = AttentionPattern(cfg.attention.window, cfg.attention.num_global)
        self.attention_backend = build_backend(
            cfg.attention.backend, self.pattern, cfg.attention.block_size
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) weights, zero biases, unit LayerNorms, zero padding embedding."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=self.cfg.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.gene_embed.weight[PAD_IDX].zero_()

    def _check(self, genes: Tensor, bins: Tensor, padding_mask: Tensor | None) -> Tensor:
        if genes.ndim != 2 or genes.shape != bins.shape:
            raise ValueError(
                f"genes and bins must both be [batch, length]; got {tuple(genes.shape)} and "
                f"{tuple(bins.shape)}"
            )
        if padding_mask is None:
            padding_mask = genes.eq(PAD_IDX)
        elif padding_mask.shape != genes.shape or padding_mask.dtype != torch.bool:
            raise ValueError("padding_mask must be a bool tensor shaped like genes (True = pad)")
        if genes.numel() and (int(genes.max()) >= self.cfg.vocab_size or int(genes.min()) < 0):
            raise ValueError(
                f"gene ids must be in [0, {self.cfg.vocab_size}); got {int(genes.min())}.."
                f"{int(genes.max())} (was the data made with another vocabulary?)"
            )
        if bins.numel() and (int(bins.max()) > self.cfg.num_bins or int(bins.min()) < 0):
            raise ValueError(
                f"bins must be in [0, {self.cfg.num_bins}] ({self.cfg.num_bins} = <mask>); "
                f"got {int(bins.min())}..{int(bins.max())}"
            )
        return padding_mask

    def forward(
        self,
        genes: Tensor,
        bins: Tensor,
        padding_mask: Tensor | None = None,
        return_logits: bool = True,
        return_states: bool = False,
    ) -> dict[str, Any]:
        """``genes``/``bins`` LongTensor [B, L], ``padding_mask`` bool [B, L] (True = pad;
        default ``genes == <pad>``) -> ``{"hidden": [B, L, d] after the final LayerNorm,
        "bin_logits": [B, L, num_bins] or None}``; with ``return_states`` also ``"states"``:
        ``num_layers + 1`` tensors [B, L, d] (0 = embedding output, i = after layer i, the last
        = ``hidden``, as the protein encoder's ``representations``). Padded positions' outputs
        are meaningless."""
        padding_mask = self._check(genes, bins, padding_mask)
        key_padding_mask = padding_mask if bool(padding_mask.any()) else None
        x = self.gene_embed(genes) + self.bin_embed(bins)
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        seq_len, head_dim = genes.shape[1], self.cfg.d_model // self.cfg.num_heads
        # Identity rotary: a gene's position in the batch carries no meaning.
        rotary = (
            torch.ones(seq_len, head_dim, device=genes.device),
            torch.zeros(seq_len, head_dim, device=genes.device),
        )
        attention = self.attention_backend.prepare(key_padding_mask, seq_len, x.device)
        use_checkpoint = (
            self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled()
        )
        states = [x]
        for layer in self.layers:
            args = (x, rotary, attention, key_padding_mask, False)
            if use_checkpoint:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, *args, use_reentrant=False)[0]
            else:
                x = layer(*args)[0]
            states.append(x)
        hidden = self.final_layer_norm(x)
        logits = self.bin_head(hidden) if return_logits else None
        out: dict[str, Any] = {"hidden": hidden, "bin_logits": logits}
        if return_states:
            out["states"] = states[:-1] + [hidden]
        return out

    def cell_embedding(
        self,
        genes: Tensor,
        bins: Tensor,
        padding_mask: Tensor | None = None,
        all_layers: bool = False,
    ) -> Tensor:
        """[B, d]: the mean of the final hidden states over each cell's non-pad genes
        (``all_layers``: [B, num_layers + 1, d], the same mean of every entry of ``states``).

        Why the mean and no ``<cls>`` token: pretraining supervises per-gene outputs only, so a
        summary token would get no training signal; the mean uses every gene, does not depend
        on gene order, and works for cells measured on any gene panel.
        """
        padding_mask = self._check(genes, bins, padding_mask)
        out = self(genes, bins, padding_mask, return_logits=False, return_states=all_layers)
        keep = (~padding_mask).to(out["hidden"].dtype).unsqueeze(-1)
        count = keep.sum(1).clamp(min=1.0)
        if not all_layers:
            return (out["hidden"] * keep).sum(1) / count
        return torch.stack([(state * keep).sum(1) / count for state in out["states"]], dim=1)


def select_genes(
    genes: np.ndarray,
    bins: np.ndarray,
    max_genes: int,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_genes`` of a cell's (gene, bin) tokens, in their stored order.

    Training (``rng`` given): a uniformly random subset, drawn anew each epoch -- over epochs
    the model sees every expressed gene and learns to infer expression from *any* context, and
    it is cheap augmentation. Embedding (``rng=None``): deterministically the most expressed
    genes (highest bin; ties by lower gene id), because those carry most of the cell-type signal
    and the same cell always gets the same embedding.
    """
    genes, bins = np.asarray(genes), np.asarray(bins)
    if len(genes) <= max_genes:
        return genes, bins
    if rng is not None:
        keep = np.sort(rng.choice(len(genes), size=max_genes, replace=False))
    else:
        order = np.lexsort((genes, -bins.astype(np.int64)))
        keep = np.sort(order[:max_genes])
    return genes[keep], bins[keep]
