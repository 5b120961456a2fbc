"""The BERT-style protein encoder: ESM-2's architecture with pluggable attention and FFN.

Embedding (with ESM-2 token dropout) -> pre-LN transformer layers (rotary attention) ->
`emb_layer_norm_after` -> LM head tied to the input embedding. Parameter names follow
fair-esm so ESM-2 weights load by renaming only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from wensu.model.attention import AttentionPattern, DenseAttention, build_backend
from wensu.model.config import EncoderConfig
from wensu.model.layers import TransformerLayer, gelu
from wensu.model.rotary import rotary_tables

# ESM-2 masks 15% of positions and replaces 80% of those with <mask>; token dropout rescales
# embeddings by the ratio of this training-time mask rate to the observed one.
MASK_RATIO_TRAIN = 0.15 * 0.8


class LMHead(nn.Module):
    """logits = layer_norm(gelu(dense(x))) @ embedding.T + bias (weight tied to the embedding)."""

    def __init__(self, d_model: int, vocab_size: int, eps: float = 1e-5):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(self.layer_norm(gelu(self.dense(x))), weight) + self.bias


class Encoder(nn.Module):
    """ESM-2-compatible encoder; see `forward` for inputs and outputs."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.padding_idx)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))
        self.emb_layer_norm_after = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.lm_head = LMHead(cfg.d_model, cfg.vocab_size, cfg.layer_norm_eps)
        self.pattern = AttentionPattern(cfg.attention.window, cfg.attention.num_global)
        self.attention_backend = build_backend(
            cfg.attention.backend, self.pattern, cfg.attention.block_size
        )
        self.reset_parameters()

    @property
    def num_layers(self) -> int:
        return self.cfg.num_layers

    def reset_parameters(self) -> None:
        """BERT-style init: N(0, init_std) weights, zero biases, zero padding embedding.

        MoE feed-forwards (router and experts) keep their own initialisation.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self.cfg.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed_tokens.weight, std=self.cfg.init_std)
        with torch.no_grad():
            self.embed_tokens.weight[self.cfg.padding_idx].zero_()
        nn.init.zeros_(self.lm_head.bias)
        for layer in self.layers:
            if layer.is_moe:
                layer.ffn.reset_parameters()

    def embed(
        self, tokens: Tensor, padding_mask: Tensor, mask_fraction: float | None = None
    ) -> Tensor:
        """Token embeddings with ESM-2 token dropout (train and eval) and zeroed padding.

        ``mask_fraction`` is each row's fraction of ``<mask>`` tokens when ``tokens`` are a
        slice of a longer sequence (streamed encoding); by default it is counted per row."""
        x = self.embed_tokens(tokens)
        if self.cfg.token_dropout:
            is_mask = tokens.eq(self.cfg.mask_idx)
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            if mask_fraction is None:
                lengths = (~padding_mask).sum(-1).clamp(min=1)
                observed = is_mask.sum(-1).to(x.dtype) / lengths
            else:
                observed = x.new_full((tokens.shape[0],), float(mask_fraction))
            # An all-<mask> row is all zeros already; the clamp only avoids 0 * inf.
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - observed).clamp(min=1e-6)[:, None, None]
        return x.masked_fill(padding_mask.unsqueeze(-1), 0.0)

    def _check_input(self, tokens: Tensor) -> None:
        """One-line errors for inputs the attention pattern or the device cannot take."""
        attention = self.cfg.attention
        if attention.window is not None and attention.num_global > tokens.shape[1]:
            raise ValueError(
                f"attention.num_global={attention.num_global} global tokens but the input has "
                f"only {tokens.shape[1]} positions: global tokens must lie inside the sequence"
            )
        weight = self.embed_tokens.weight
        if weight.device.type == "cpu" and weight.dtype == torch.float16:
            raise TypeError(
                "float16 weights on CPU are not supported: use float32 or bfloat16 on CPU "
                "(float16 is for GPUs)"
            )

    def _layer_indices(self, repr_layers: Sequence[int]) -> dict[int, int]:
        """Map each requested index (negative allowed) to 0..num_layers."""
        resolved = {}
        for requested in repr_layers:
            index = requested + self.num_layers + 1 if requested < 0 else requested
            if not 0 <= index <= self.num_layers:
                raise ValueError(
                    f"repr_layers index {requested} is out of range for {self.num_layers} layers "
                    f"(valid: {-self.num_layers - 1}..{self.num_layers})"
                )
            resolved[requested] = index
        return resolved

    def forward(
        self,
        tokens: Tensor,
        repr_layers: Sequence[int] = (),
        need_attn: bool = False,
        return_logits: bool = True,
    ) -> dict[str, Any]:
        """Encode token ids [B, L] (padding = `padding_idx`).

        Returns a dict with
        - "logits": [B, L, vocab] (None when `return_logits` is False),
        - "representations": {requested index: [B, L, d]} where 0 is the embedding output,
          i the output of layer i and num_layers the output after `emb_layer_norm_after`
          (negative indices count from the end and are returned under the requested key),
        - "attentions": [B, num_layers, H, L, L] float32, zero at padding (None unless
          `need_attn`; computed with the explicit dense path under the configured pattern),
        - "aux_loss": scalar MoE load-balancing loss already multiplied by
          `moe_aux_loss_weight` (zero for the dense FFN).
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        self._check_input(tokens)
        wanted = self._layer_indices(repr_layers)
        by_index: dict[int, Tensor] = {}
        seq_len = tokens.shape[1]
        padding_mask = tokens.eq(self.cfg.padding_idx)
        key_padding_mask = padding_mask if bool(padding_mask.any()) else None

        x = self.embed(tokens, padding_mask)
        if 0 in wanted.values():
            by_index[0] = x
        rotary = rotary_tables(
            seq_len,
            self.cfg.head_dim,
            self.cfg.rotary_base,
            tokens.device,
            inv_freq=self.cfg.rotary_inv_freq,
        )
        if need_attn:
            attention = DenseAttention(self.pattern).prepare(key_padding_mask, seq_len, x.device)
        else:
            attention = self.attention_backend.prepare(key_padding_mask, seq_len, x.device)
        use_checkpoint = (
            self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled()
        )
        attention_maps = []
        aux_losses = []
        for index, layer in enumerate(self.layers, start=1):
            args = (x, rotary, attention, key_padding_mask, need_attn)
            if use_checkpoint:
                x, weights, aux = checkpoint(layer, *args, use_reentrant=False)
            else:
                x, weights, aux = layer(*args)
            if index in wanted.values():
                by_index[index] = x
            if weights is not None:
                attention_maps.append(weights)
            if aux is not None:
                aux_losses.append(aux)

        x = self.emb_layer_norm_after(x)
        by_index[self.num_layers] = x
        logits = self.lm_head(x, self.embed_tokens.weight) if return_logits else None

        attentions = None
        if need_attn:
            attentions = torch.stack(attention_maps, dim=1)
            if key_padding_mask is not None:
                keep = (~key_padding_mask).to(attentions.dtype)
                attentions = attentions * (keep[:, :, None] * keep[:, None, :])[:, None, None]
        if aux_losses:
            aux_loss = torch.stack(aux_losses).sum() * self.cfg.moe_aux_loss_weight
        else:
            aux_loss = torch.zeros((), device=tokens.device)
        return {
            "logits": logits,
            "representations": {key: by_index[index] for key, index in wanted.items()},
            "attentions": attentions,
            "aux_loss": aux_loss,
        }


def build_encoder(
    cfg: EncoderConfig | Mapping[str, Any], device: torch.device | str | None = None
) -> Encoder:
    """Encoder from a config or a plain mapping (e.g. `OmegaConf.to_container(cfg.model)`).

    `device="meta"` builds it without allocating weights (for counting parameters).
    """
    if not isinstance(cfg, EncoderConfig):
        cfg = EncoderConfig.from_dict(cfg)
    if device is None:
        return Encoder(cfg)
    with torch.device(device):
        return Encoder(cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (the tied LM-head weight counts once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
