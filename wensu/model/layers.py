"""Transformer building blocks with fair-esm parameter names (interop is a rename)."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from wensu.model.attention import DensePrepared, PreparedAttention
from wensu.model.config import EncoderConfig
from wensu.model.moe import MoEFeedForward
from wensu.model.rotary import apply_rotary


def gelu(x: Tensor) -> Tensor:
    """Exact (erf) GELU, as ESM-2 uses: x * 0.5 * (1 + erf(x / sqrt(2))).

    The fused kernel keeps one saved tensor for backward instead of ESM-2's four
    elementwise intermediates, which matters for long sequences.
    """
    return F.gelu(x, approximate="none")


class SelfAttention(nn.Module):
    """Multi-head self-attention: q scaled by head_dim**-0.5, then rotary on q and k."""

    def __init__(self, d_model: int, num_heads: int, attention_dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        attention: PreparedAttention,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x [B, L, d] -> (output [B, L, d], weights [B, H, L, L] if need_weights else None).

        `need_weights` requires a `DensePrepared` attention (explicit softmax).
        """
        q = rearrange(self.q_proj(x), "b l (h d) -> b h l d", h=self.num_heads) * self.scaling
        k = rearrange(self.k_proj(x), "b l (h d) -> b h l d", h=self.num_heads)
        v = rearrange(self.v_proj(x), "b l (h d) -> b h l d", h=self.num_heads)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout_p = self.attention_dropout if self.training else 0.0
        weights = None
        if need_weights:
            if not isinstance(attention, DensePrepared):
                raise TypeError("attention weights need the dense attention path")
            out, weights = attention.with_weights(q, k, v, dropout_p)
        else:
            out = attention(q, k, v, dropout_p)
        return self.out_proj(rearrange(out, "b h l d -> b l (h d)")), weights


class FeedForward(nn.Module):
    """fc2(gelu(fc1(x)))."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.dropout(gelu(self.fc1(x)), p=self.dropout, training=self.training)
        return self.fc2(hidden)


def build_feed_forward(cfg: EncoderConfig) -> nn.Module:
    """Dense FFN, or `wensu.model.moe.MoEFeedForward` for `ffn: moe`."""
    if cfg.ffn == "moe":
        return MoEFeedForward(
            cfg.d_model,
            cfg.ffn_dim,
            num_experts=cfg.moe_num_experts,
            top_k=cfg.moe_top_k,
            capacity_factor=cfg.moe_capacity_factor,
            dropout=cfg.dropout,
        )
    return FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)


class TransformerLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.self_attn = SelfAttention(cfg.d_model, cfg.num_heads, cfg.attention_dropout)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = build_feed_forward(cfg)
        self.is_moe = cfg.ffn == "moe"
        self.dropout = cfg.dropout

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        attention: PreparedAttention,
        padding_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """-> (x, attention weights or None, unweighted MoE aux loss or None)."""
        attended, weights = self.self_attn(
            self.self_attn_layer_norm(x), rotary, attention, need_weights
        )
        x = x + F.dropout(attended, p=self.dropout, training=self.training)
        hidden = self.final_layer_norm(x)
        aux_loss = None
        if self.is_moe:
            hidden, aux_loss = self.ffn(hidden, padding_mask)
        else:
            hidden = self.ffn(hidden)
        x = x + F.dropout(hidden, p=self.dropout, training=self.training)
        return x, weights, aux_loss
