"""Chunked backend: blocked sliding-window attention in pure PyTorch, O(L * (w + g)).

Queries are split into blocks of `block_size`. Block n (queries [n*bs, (n+1)*bs)) attends to
its key band [n*bs - w, (n+1)*bs - 1 + w], gathered with `unfold` from keys padded by w on
both sides, plus the g global keys. Band and global keys are concatenated so one softmax (one
logsumexp) normalises them jointly; global keys that also fall inside the band are masked in
the band so they count once. The g global query rows see every key and are computed
separately (O(g * L)). No L x L tensor is ever built: the largest tensors are the gathered
key/value bands, (bs + 2w + g) / bs times the size of k.

Each block is one `scaled_dot_product_attention` call over its own short key list, so the
fused CPU/GPU kernels do the softmax; blocks are processed in groups to bound the size of
the gathered bands during long-sequence inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from wensu.model.attention.base import AttentionBackend, PreparedAttention
from wensu.model.attention.pattern import AttentionPattern

# Gathered key (and value) band elements per step; bounds inference memory for long inputs.
BAND_ELEMENTS_PER_STEP = 1 << 25


def _ensure_some_key(mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """Let rows without any visible key see all keys (no NaN); return the rows to zero."""
    has_key = mask.any(dim=-1, keepdim=True)
    if bool(has_key.all()):
        return mask, None
    return mask | ~has_key, ~has_key


class ChunkedPrepared(PreparedAttention):
    """Band masks for one batch: [B|1, n_blocks, block, g + band] plus the global-row mask."""

    def __init__(
        self,
        pattern: AttentionPattern,
        key_padding_mask: Tensor | None,
        seq_len: int,
        block_size: int,
        device: torch.device,
    ):
        self.seq_len = seq_len
        self.window = pattern.effective_window(seq_len)
        self.num_global = min(pattern.num_global, seq_len)
        self.block = min(block_size, max(seq_len, 1))
        self.num_blocks = math.ceil(seq_len / self.block)
        self.band = self.block + 2 * self.window
        self.tail = self.num_blocks * self.block - seq_len
        if key_padding_mask is not None:
            device = key_padding_mask.device
        w, g, block, band = self.window, self.num_global, self.block, self.band

        positions = dict(device=device, dtype=torch.int32)
        query_pos = torch.arange(self.num_blocks * block, **positions).view(-1, block, 1)
        block_start = torch.arange(self.num_blocks, **positions).view(-1, 1, 1) * block
        key_pos = block_start - w + torch.arange(band, **positions).view(1, 1, band)
        in_band = pattern.visible(query_pos, key_pos)
        in_band &= (key_pos >= g) & (key_pos >= 0) & (key_pos < seq_len)
        global_pos = torch.arange(g, **positions).view(1, 1, g)
        to_global = pattern.visible(query_pos, global_pos)  # [n, block, g]
        mask = torch.cat([to_global, in_band], dim=-1)[None]  # [1, n, block, g + band]

        row_mask = pattern.visible(
            torch.arange(g, **positions)[:, None], torch.arange(seq_len, **positions)[None]
        )[None, None]  # [1, 1, g, L]
        if key_padding_mask is not None:
            padded = F.pad(key_padding_mask, (w, w + self.tail), value=True)
            band_pad = padded.unfold(1, band, block)  # [B, n, band]
            global_pad = key_padding_mask[:, None, :g].expand(-1, self.num_blocks, -1)
            mask = mask & ~torch.cat([global_pad, band_pad], dim=-1)[:, :, None, :]
            row_mask = row_mask & ~key_padding_mask[:, None, None, :]
        self.mask, self.empty = _ensure_some_key(mask)
        self._bias: dict[tuple[torch.dtype, int, int], Tensor] = {}
        self.row_mask, self.row_empty = _ensure_some_key(row_mask)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        if q.shape[-2] != self.seq_len:
            raise ValueError(f"prepared for length {self.seq_len}, got {q.shape[-2]}")
        out = self._banded(q, k, v, dropout_p)
        if self.num_global == 0:
            return out
        return torch.cat([self._global_rows(q, k, v, dropout_p), out[:, :, self.num_global :]], 2)

    def _banded(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
        batch, heads, _, dim = q.shape
        w, g, block, band, tail = self.window, self.num_global, self.block, self.band, self.tail
        padded_q = F.pad(q, (0, 0, 0, tail)) if tail else q
        queries = rearrange(padded_q, "b h (n s) d -> b n h s d", s=block)
        # unfold gives views [B, H, n, D, band]; nothing is copied until a group is gathered.
        key_band = rearrange(
            F.pad(k, (0, 0, w, w + tail)).unfold(2, band, block), "b h n d t -> b n h t d"
        )
        value_band = rearrange(
            F.pad(v, (0, 0, w, w + tail)).unfold(2, band, block), "b h n d t -> b n h t d"
        )
        global_keys = rearrange(k[:, :, :g], "b h j d -> b 1 h j d")
        global_values = rearrange(v[:, :, :g], "b h j d -> b 1 h j d")
        per_block = batch * heads * (band + g) * dim
        step = max(1, BAND_ELEMENTS_PER_STEP // per_block)
        pieces = []
        for start in range(0, self.num_blocks, step):
            stop = min(start + step, self.num_blocks)
            count = stop - start
            keys, values = key_band[:, start:stop], value_band[:, start:stop]
            if g:
                keys = torch.cat([global_keys.expand(-1, count, -1, -1, -1), keys], dim=3)
                values = torch.cat([global_values.expand(-1, count, -1, -1, -1), values], dim=3)
            out = F.scaled_dot_product_attention(
                rearrange(queries[:, start:stop], "b n h s d -> (b n) h s d"),
                rearrange(keys, "b n h t d -> (b n) h t d"),
                rearrange(values, "b n h t d -> (b n) h t d"),
                attn_mask=self._group_bias(q.dtype, batch, start, stop),
                dropout_p=dropout_p,
                scale=1.0,
            )
            if self.empty is not None:
                empty = self.empty[:, start:stop].expand(batch, -1, -1, -1)
                out = out.masked_fill(rearrange(empty, "b n s one -> (b n) 1 s one"), 0.0)
            pieces.append(rearrange(out, "(b n) h s d -> b h (n s) d", b=batch))
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
        return out[:, :, : self.seq_len]

    def _group_bias(self, dtype: torch.dtype, batch: int, start: int, stop: int) -> Tensor:
        """Additive mask (0 / -inf) [(B n), 1, block, g + band] for blocks start..stop-1.

        Built once per batch and shared by all layers: SDPA would otherwise convert the
        boolean mask in every layer and keep each copy for the backward pass.
        """
        key = (dtype, batch, start)
        if key not in self._bias:
            mask = self.mask[:, start:stop].expand(batch, -1, -1, -1)
            bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
            bias = bias.masked_fill(~mask, float("-inf"))
            self._bias[key] = rearrange(bias, "b n s t -> (b n) 1 s t")
        return self._bias[key]

    def _global_rows(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
        out = F.scaled_dot_product_attention(
            q[:, :, : self.num_global],
            k,
            v,
            attn_mask=self.row_mask,
            dropout_p=dropout_p,
            scale=1.0,
        )
        if self.row_empty is not None:
            out = out.masked_fill(self.row_empty, 0.0)
        return out


class ChunkedAttention(AttentionBackend):
    """Blocked sliding-window + global attention, linear in L, differentiable everywhere."""

    name = "chunked"

    def prepare(
        self, key_padding_mask: Tensor | None, seq_len: int, device: torch.device
    ) -> ChunkedPrepared:
        return ChunkedPrepared(self.pattern, key_padding_mask, seq_len, self.block_size, device)
