"""Flash-attention-style blocked attention for the sliding-window + global pattern.

`BandAttentionFunction` is a `torch.autograd.Function`: the forward pass keeps only the output
and one log-sum-exp per query row; the backward pass recomputes each block of scores from
q, k, v and those statistics. Nothing of size L x L, and no probability block, outlives the
step that made it, so attention costs O(L * (w + g)) work and O(L) memory in both directions.
The block layout and masks are in `band.py`.

Two implementations of the band pass give the same result:
- CPU (no dropout): each step is one call of PyTorch's fused CPU flash-attention kernel
  (`_scaled_dot_product_flash_attention_for_cpu` and its backward, which take the
  log-sum-exp), over the step's query blocks and their gathered key spans;
- elsewhere (GPU, or attention dropout): the same algebra written out in tensor ops, a few
  heads at a time, with dropout masks regenerated from a per-step seed.
The g global query rows are a separate pass over key chunks; both passes share one
log-sum-exp per row, so each softmax is over exactly the keys the row sees.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from wensu.model.attention.band import (
    SCORE_ELEMENTS_PER_STEP,
    BandGeometry,
    add_span,
    band_mask,
    global_row_mask,
    rows,
    write_rows,
)

_NEG_INF = float("-inf")
# Use the fused CPU kernel where it applies (tests switch it off to cover the other path).
FUSED_CPU = True
_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half types, else the input's own precision (float64 stays exact)."""
    return torch.promote_types(x.dtype, torch.float32)


def _row_delta(grad_out: Tensor, out: Tensor) -> Tensor:
    """rowsum(dO * O) [..., rows, 1]: the softmax backward's correction term."""
    return (grad_out.to(_accumulation_dtype(out)) * out).sum(-1, keepdim=True)


def _probabilities(masked_scores: Tensor, lse: Tensor) -> Tensor:
    """exp(scores - lse): 0 at hidden keys (-inf scores), also in rows without keys (lse -inf)."""
    return torch.exp(masked_scores - lse.masked_fill(lse == _NEG_INF, 0.0)[..., None])


class _Dropout:
    """Attention dropout whose masks the backward pass regenerates from (seed, step)."""

    def __init__(self, p: float, seed: int, device: torch.device):
        self.p, self.seed, self.device = p, seed, device
        self.generator = torch.Generator(device=device) if p > 0 else None

    def apply(self, probs: Tensor, step: int) -> Tensor:
        """probs * keep / (1 - p) with this step's keep mask (probs itself when p = 0)."""
        if self.generator is None:
            return probs
        self.generator.manual_seed(self.seed + step)
        keep = torch.rand(probs.shape, generator=self.generator, device=self.device) >= self.p
        return probs * keep / (1 - self.p)


class _Band:
    """Query block tensors and their key/value spans for one step."""

    def __init__(self, geo: BandGeometry, q: Tensor, k: Tensor, v: Tensor, blocks, heads):
        block, reach, g = geo.block, geo.reach, geo.num_global
        start, stop = blocks.start * block, blocks.stop * block
        self.q = rows(q[:, heads], start, stop).unflatten(-2, (-1, block))  # [B, h, n, blk, D]
        low, high = start - reach * block, stop + reach * block
        # unfold views: [B, h, n, D, span]
        self.k = rows(k[:, heads], low, high).unfold(-2, geo.span, block)
        self.v = rows(v[:, heads], low, high).unfold(-2, geo.span, block)
        self.global_k = k[:, heads, None, :g]  # [B, h, 1, g, D]
        self.global_v = v[:, heads, None, :g]
        self.g = g
        self.acc = _accumulation_dtype(q)

    def scores(self) -> Tensor:
        """q k^T over [global keys, span keys], [B, h, n, blk, g + span] (at least float32)."""
        band = self.q @ self.k
        if not self.g:
            return band.to(self.acc)
        to_global = self.q @ self.global_k.transpose(-1, -2)
        return torch.cat([to_global, band], dim=-1).to(self.acc)

    def weighted_values(self, probs: Tensor) -> Tensor:
        probs = probs.to(self.v.dtype)
        out = probs[..., self.g :] @ self.v.transpose(-1, -2)
        if self.g:
            out = out + probs[..., : self.g] @ self.global_v
        return out


def _band_steps(geo: BandGeometry, q: Tensor, k: Tensor, v: Tensor, padding: Tensor | None):
    """Yield (query blocks, heads, _Band, mask) for every step; one mask per block group."""
    current, mask = None, None
    for blocks, heads in geo.steps(q.shape[0], q.shape[1]):
        if blocks != current:
            current, mask = blocks, band_mask(geo, padding, blocks, q.device)
        yield blocks, heads, _Band(geo, q, k, v, blocks, heads), mask


def _global_chunks(geo: BandGeometry, batch: int, heads: int) -> list[slice]:
    """Key chunks for the global query rows, sized like a band step."""
    per_key = max(1, batch * heads * geo.num_global)
    size = max(geo.block, SCORE_ELEMENTS_PER_STEP // per_key)
    return [slice(s, min(s + size, geo.seq_len)) for s in range(0, geo.seq_len, size)]


# Dropout step ids of the global pass start here (band steps count from 1).
_GLOBAL_STEP = 1 << 40


class _GlobalRows:
    """The g global query rows against every key, one key chunk at a time."""

    def __init__(self, geo: BandGeometry, q: Tensor, k: Tensor, v: Tensor, padding):
        self.geo, self.k, self.v, self.padding = geo, k, v, padding
        self.q = q[:, :, : geo.num_global]
        self.chunks = _global_chunks(geo, q.shape[0], q.shape[1])
        self.acc = _accumulation_dtype(q)

    def scores(self, keys: slice) -> Tensor:
        """Float32 scores [B, H, g, n_keys], -inf at keys the rows do not see."""
        mask = global_row_mask(self.geo, self.padding, keys, self.q.device)
        scores = (self.q @ self.k[:, :, keys].transpose(-1, -2)).to(self.acc)
        return scores.masked_fill_(~mask, _NEG_INF)

    def forward(self, dropout: _Dropout, out: Tensor, lse: Tensor) -> None:
        """Write the global rows' output and log-sum-exp into `out` and `lse`."""
        row_lse = torch.full(self.q.shape[:-1], _NEG_INF, dtype=self.acc, device=self.q.device)
        for keys in self.chunks:
            row_lse = torch.logaddexp(row_lse, self.scores(keys).logsumexp(-1))
        total = torch.zeros(self.q.shape, dtype=self.acc, device=self.q.device)
        for index, keys in enumerate(self.chunks):
            probs = _probabilities(self.scores(keys), row_lse)
            probs = dropout.apply(probs, _GLOBAL_STEP + index)
            total += probs.to(self.v.dtype) @ self.v[:, :, keys]
        g = self.geo.num_global
        out[:, :, :g] = total.to(out.dtype)
        lse[:, :, :g] = row_lse

    def backward(self, dropout, out, lse, grad_out, grad_q, grad_k, grad_v) -> None:
        """Add the global rows' contributions to the q, k, v gradients."""
        g = self.geo.num_global
        d_out, q = grad_out[:, :, :g].to(self.acc), self.q.to(self.acc)
        row_lse, row_delta = lse[:, :, :g], _row_delta(d_out, out[:, :, :g])
        for index, keys in enumerate(self.chunks):
            probs = _probabilities(self.scores(keys), row_lse)
            step = _GLOBAL_STEP + index
            grad_v[:, :, keys] += dropout.apply(probs, step).transpose(-1, -2) @ d_out
            d_probs = d_out @ self.v[:, :, keys].to(self.acc).transpose(-1, -2)
            d_scores = probs * (dropout.apply(d_probs, step) - row_delta)
            grad_q[:, :, :g] += d_scores @ self.k[:, :, keys].to(self.acc)
            grad_k[:, :, keys] += d_scores.transpose(-1, -2) @ q


class _FusedStep:
    """One step of the fused CPU path: all heads of a few query blocks, as kernel inputs.

    Queries become [(B n), H, blk, D], keys and values [(B n), H, g + span, D] (global keys
    first) and the mask an additive bias [(B n), 1, blk, g + span].
    """

    def __init__(self, geo: BandGeometry, q: Tensor, k: Tensor, v: Tensor, blocks, masks):
        block, reach = geo.block, geo.reach
        self.start, stop = blocks.start * block, blocks.stop * block
        self.count, self.batch = blocks.stop - blocks.start, q.shape[0]
        self.q = self.blocked(rows(q, self.start, stop))
        low, high = self.start - reach * block, stop + reach * block
        self.k, self.v = (self.span(x, low, high, geo) for x in (k, v))
        self.bias, self.has_key = masks(blocks)

    def blocked(self, x: Tensor) -> Tensor:
        """[B, H, n*blk, ...] -> [(B n), H, blk, ...] (contiguous)."""
        return rearrange(x, "b h (n s) ... -> (b n) h s ...", n=self.count).contiguous()

    def span(self, x: Tensor, low: int, high: int, geo: BandGeometry) -> Tensor:
        spans = rearrange(
            rows(x, low, high).unfold(2, geo.span, geo.block), "b h n d t -> (b n) h t d"
        )
        if not geo.num_global:
            return spans.contiguous()
        shared = x[:, :, None, : geo.num_global].expand(-1, -1, self.count, -1, -1)
        return torch.cat([rearrange(shared, "b h n j d -> (b n) h j d"), spans], dim=2)

    def unblocked(self, x: Tensor) -> Tensor:
        """[(B n), H, blk, ...] -> [B, H, n*blk, ...]."""
        return rearrange(x, "(b n) h s ... -> b h (n s) ...", b=self.batch)


class _FusedMasks:
    """Additive biases [(B n), 1, blk, g + span] and has-a-key flags [(B n), 1, blk] per step.

    Interior steps without padding share one bias (cached per block count) and never have a
    row without keys (flag None).
    """

    def __init__(self, geo: BandGeometry, padding: Tensor | None, batch: int, dtype, device):
        self.geo, self.padding, self.batch = geo, padding, batch
        self.dtype, self.device = dtype, device
        self.interior: dict[int, Tensor] = {}

    def __call__(self, blocks: slice) -> tuple[Tensor, Tensor | None]:
        count = blocks.stop - blocks.start
        interior = self.padding is None and self.geo.is_interior(blocks)
        if interior and count in self.interior:
            return self.interior[count], None
        mask = band_mask(self.geo, self.padding, blocks, self.device)
        mask = mask.expand(self.batch, -1, -1, -1, -1)
        bias = torch.zeros(mask.shape, dtype=self.dtype, device=self.device)
        bias = rearrange(bias.masked_fill_(~mask, _NEG_INF), "b one n s t -> (b n) one s t")
        if interior:
            self.interior[count] = bias
            return bias, None
        return bias, rearrange(mask.any(-1), "b one n s -> (b n) one s")


def _fused_forward(geo: BandGeometry, q, k, v, padding, out: Tensor, lse: Tensor) -> None:
    masks = _FusedMasks(geo, padding, q.shape[0], q.dtype, q.device)
    for blocks, heads in geo.steps(q.shape[0], q.shape[1], split_heads=False):
        step = _FusedStep(geo, q, k, v, blocks, masks)
        block_out, block_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            step.q, step.k, step.v, attn_mask=step.bias, scale=1.0
        )
        if step.has_key is not None:  # rows that see no key: zero output, lse -inf
            block_out = block_out.masked_fill(~step.has_key[..., None], 0.0)
            block_lse = block_lse.masked_fill(~step.has_key, _NEG_INF)
        write_rows(out, heads, step.start, step.unblocked(block_out))
        write_rows(lse, heads, step.start, step.unblocked(block_lse))


def _fused_backward(geo, q, k, v, padding, out, lse, grad_out, grad_q, grad_k, grad_v) -> None:
    g = geo.num_global
    kernel_lse = lse.masked_fill(lse == _NEG_INF, 0.0)  # rows without keys: P = exp(-inf) = 0
    masks = _FusedMasks(geo, padding, q.shape[0], q.dtype, q.device)
    for blocks, heads in geo.steps(q.shape[0], q.shape[1], split_heads=False):
        step = _FusedStep(geo, q, k, v, blocks, masks)
        stop = step.start + step.count * geo.block
        d_q, d_k, d_v = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            step.blocked(rows(grad_out, step.start, stop)),
            step.q,
            step.k,
            step.v,
            step.blocked(rows(out, step.start, stop)),
            step.blocked(rows(kernel_lse, step.start, stop)),
            0.0,
            False,
            attn_mask=step.bias,
            scale=1.0,
        )
        write_rows(grad_q, heads, step.start, step.unblocked(d_q))
        for grads, target in ((d_k, grad_k), (d_v, grad_v)):
            grads = rearrange(grads, "(b n) h t d -> b h n t d", b=step.batch)
            if g:
                target[:, :, :g] += grads[:, :, :, :g].sum(2)
            add_span(target, heads, geo, blocks, grads[:, :, :, g:])


def _generic_forward(geo, q, k, v, padding, dropout: _Dropout, out: Tensor, lse: Tensor):
    for step, (blocks, heads, band, mask) in enumerate(_band_steps(geo, q, k, v, padding)):
        scores = band.scores().masked_fill_(~mask, _NEG_INF)
        block_lse = torch.logsumexp(scores, dim=-1)  # [B, h, n, blk]
        probs = dropout.apply(_probabilities(scores, block_lse), step)
        del scores
        start = blocks.start * geo.block
        write_rows(out, heads, start, band.weighted_values(probs).flatten(2, 3))
        write_rows(lse, heads, start, block_lse.flatten(2, 3))


def _generic_backward(geo, q, k, v, padding, dropout, out, lse, grad_out, grads) -> None:
    grad_q, grad_k, grad_v = grads
    acc, g, blocked = grad_q.dtype, geo.num_global, (-1, geo.block)
    delta = _row_delta(grad_out, out)[..., 0]  # [B, H, L]
    for step, (blocks, heads, band, mask) in enumerate(_band_steps(geo, q, k, v, padding)):
        start, stop = blocks.start * geo.block, blocks.stop * geo.block
        row_lse = rows(lse[:, heads], start, stop).unflatten(-1, blocked)
        row_delta = rows(delta[:, heads], start, stop).unflatten(-1, blocked)[..., None]
        d_out = rows(grad_out[:, heads], start, stop).unflatten(-2, blocked).to(acc)
        probs = _probabilities(band.scores().masked_fill_(~mask, _NEG_INF), row_lse)
        dropped = dropout.apply(probs, step)
        span_v, span_k, block_q = band.v.to(acc), band.k.to(acc), band.q.to(acc)
        add_span(grad_v, heads, geo, blocks, dropped[..., g:].transpose(-1, -2) @ d_out)
        d_probs = d_out @ span_v  # [B, h, n, blk, span]
        if g:
            grad_v[:, heads, :g] += (dropped[..., :g].transpose(-1, -2) @ d_out).sum(2)
            to_global = d_out @ band.global_v.to(acc).transpose(-1, -2)
            d_probs = torch.cat([to_global, d_probs], dim=-1)
        del dropped
        d_scores = probs * (dropout.apply(d_probs, step) - row_delta)
        del probs, d_probs
        d_q = d_scores[..., g:] @ span_k.transpose(-1, -2)
        if g:
            d_q += d_scores[..., :g] @ band.global_k.to(acc)
            grad_k[:, heads, :g] += (d_scores[..., :g].transpose(-1, -2) @ block_q).sum(2)
        write_rows(grad_q, heads, start, d_q.flatten(2, 3))
        add_span(grad_k, heads, geo, blocks, d_scores[..., g:].transpose(-1, -2) @ block_q)


def uses_fused_cpu_kernel(q: Tensor, dropout_p: float) -> bool:
    """Whether the band pass runs PyTorch's fused CPU flash-attention kernel."""
    return FUSED_CPU and q.device.type == "cpu" and dropout_p == 0 and q.dtype in _FUSED_DTYPES


class BandAttentionFunction(torch.autograd.Function):
    """softmax(q k^T | pattern) v, recomputing score blocks in backward (flash-attention style).

    Inputs: q, k, v [B, H, L, D] (q already scaled), a `BandGeometry`, the key padding mask
    [B, L] (True = padding) or None, and the attention dropout probability. Rows that see no
    key give zeros. Saved for backward: q, k, v, the output and one log-sum-exp per row.
    """

    @staticmethod
    def forward(ctx, q, k, v, geo: BandGeometry, padding, dropout_p: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        fused = uses_fused_cpu_kernel(q, dropout_p)
        seed = int(torch.randint(0, 1 << 62, (1,)).item()) if dropout_p > 0 else 0
        dropout = _Dropout(dropout_p, seed, q.device)
        out = torch.zeros_like(q)
        lse = torch.full(q.shape[:-1], _NEG_INF, dtype=_accumulation_dtype(q), device=q.device)
        if fused:
            _fused_forward(geo, q, k, v, padding, out, lse)
        else:
            _generic_forward(geo, q, k, v, padding, dropout, out, lse)
        if geo.num_global:
            _GlobalRows(geo, q, k, v, padding).forward(dropout, out, lse)
        ctx.save_for_backward(q, k, v, out, lse, padding)
        ctx.geo, ctx.dropout, ctx.fused = geo, dropout, fused
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, padding = ctx.saved_tensors
        geo, dropout = ctx.geo, ctx.dropout
        grad_out = grad_out.contiguous()
        acc = _accumulation_dtype(q)
        grads = tuple(torch.zeros(t.shape, dtype=acc, device=t.device) for t in (q, k, v))
        if ctx.fused:
            _fused_backward(geo, q, k, v, padding, out, lse, grad_out, *grads)
        else:
            _generic_backward(geo, q, k, v, padding, dropout, out, lse, grad_out, grads)
        if geo.num_global:
            _GlobalRows(geo, q, k, v, padding).backward(dropout, out, lse, grad_out, *grads)
        grad_q, grad_k, grad_v = grads
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None, None


def band_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    geo: BandGeometry,
    padding: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Attention under `geo.pattern` with O(L) memory in forward and backward."""
    return BandAttentionFunction.apply(q, k, v, geo, padding, dropout_p)
