"""Inference over one very long sequence with memory flat per residue (a million residues and
more): the windowed encoder run layer by layer over chunks of positions.

A windowed model's query ``i`` sees keys ``|i - j| <= window`` plus the ``num_global`` global
tokens (:class:`~wensu.model.attention.AttentionPattern`). So one layer can be computed chunk by
chunk: the queries of chunk ``[s, e)`` need the layer's input only at ``[s - window, e + window)``
and at the global positions. The one tensor kept for the whole sequence is the residual stream
``x`` [L, d], updated in place chunk after chunk; the old values a later chunk still needs (its
left halo, up to ``window`` rows) are kept aside before they are overwritten. A chunk's queries
run through the banded (``chunked``) attention backend over its rows with the global rows in
front, so the attention work is O(chunk * window), never chunk x chunk. The global
queries see every key: their attention is accumulated over the chunks with an online softmax
(running maximum, normaliser and weighted sum) and written back once the layer's pass is over.

Peak memory is ``x`` (L * d_model * 4 bytes) plus per-chunk work; nothing is L x L and nothing
else scales with L but the rotary tables (L * head_dim * 8 bytes). Outputs equal the encoder's
forward pass with the same attention pattern (tests compare it with the dense backend).
Representations are handed to ``sink(layer, start, values)`` chunk by chunk as each requested
layer completes, so the caller decides where they go (a running mean, a file, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from einops import rearrange
from torch import Tensor

from wensu.model.attention import AttentionBackend, ChunkedAttention
from wensu.model.encoder import Encoder
from wensu.model.layers import TransformerLayer
from wensu.model.rotary import apply_rotary, rotary_tables

Sink = Callable[[int, int, Tensor], None]


@torch.no_grad()
def stream_encode(
    encoder: Encoder,
    tokens: Tensor,
    layers: Iterable[int],
    sink: Sink,
    chunk_size: int = 2048,
) -> None:
    """Encode one token sequence ``tokens`` [L] (``<cls> ... <eos>``, no padding) and call
    ``sink(layer, start, values [n, d_model])`` for each requested absolute ``layer``
    (0 = embeddings, ``num_layers`` = after the final layer norm) over consecutive chunks."""
    cfg = encoder.cfg
    window = cfg.attention.window
    if window is None:
        raise ValueError("streamed encoding needs a windowed model (attention.window is null)")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence [length], got shape {tuple(tokens.shape)}")
    if encoder.training:
        raise ValueError("streamed encoding is for inference: call encoder.eval() first")
    wanted = set(layers)
    length, chunk_size = tokens.shape[0], max(int(chunk_size), 1)
    chunks = [(s, min(s + chunk_size, length)) for s in range(0, length, chunk_size)]

    x = _embed(encoder, tokens, chunks)
    if 0 in wanted:
        _emit(sink, 0, x, chunks)
    cos, sin = rotary_tables(
        length, cfg.head_dim, cfg.rotary_base, tokens.device, inv_freq=cfg.rotary_inv_freq
    )
    backend = ChunkedAttention(encoder.pattern, cfg.attention.block_size)
    for index, layer in enumerate(encoder.layers, start=1):
        _layer_pass(layer, x, (cos, sin), backend, chunks)
        if index == cfg.num_layers and index in wanted:
            _emit(sink, index, x, chunks, encoder.emb_layer_norm_after)
        elif index in wanted:
            _emit(sink, index, x, chunks)


def _embed(encoder: Encoder, tokens: Tensor, chunks: list[tuple[int, int]]) -> Tensor:
    """Token embeddings into one preallocated [L, d] tensor, chunk by chunk (token dropout
    scaled by the whole sequence's mask fraction, as ``Encoder.embed`` does)."""
    cfg = encoder.cfg
    x = torch.empty(tokens.shape[0], cfg.d_model, device=tokens.device)
    masked = float(tokens.eq(cfg.mask_idx).sum()) / max(tokens.shape[0], 1)
    for start, end in chunks:
        part = tokens[start:end][None]
        x[start:end] = encoder.embed(part, torch.zeros_like(part, dtype=torch.bool), masked)[0]
    return x


def _emit(sink: Sink, layer: int, x: Tensor, chunks, norm: torch.nn.Module | None = None):
    for start, end in chunks:
        values = x[start:end]
        sink(layer, start, norm(values) if norm is not None else values)


def _project(layer: TransformerLayer, x_part: Tensor, cos: Tensor, sin: Tensor):
    """q (scaled), k, v [H, n, head_dim] of the rows ``x_part`` at the positions of cos/sin."""
    attn = layer.self_attn
    hidden = layer.self_attn_layer_norm(x_part)
    heads = dict(h=attn.num_heads)
    q = rearrange(attn.q_proj(hidden), "l (h d) -> h l d", **heads) * attn.scaling
    k = rearrange(attn.k_proj(hidden), "l (h d) -> h l d", **heads)
    v = rearrange(attn.v_proj(hidden), "l (h d) -> h l d", **heads)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


def _finish(layer: TransformerLayer, x_old: Tensor, attended: Tensor) -> Tensor:
    """The rest of the pre-LN block: residual, FFN, residual (attended is [H, n, head_dim])."""
    x_new = x_old + layer.self_attn.out_proj(rearrange(attended, "h l d -> l (h d)"))
    hidden = layer.final_layer_norm(x_new)
    if layer.is_moe:
        hidden, _ = layer.ffn(hidden[None], None)
        hidden = hidden[0]
    else:
        hidden = layer.ffn(hidden)
    return x_new + hidden


class _GlobalQueries:
    """Attention of the global queries over every key, accumulated chunk by chunk with an
    online softmax (running maximum, normaliser and weighted sum of values)."""

    def __init__(self, q: Tensor):
        heads, count, head_dim = q.shape
        self.q = q
        self.running_max = q.new_full((heads, count, 1), float("-inf"), dtype=torch.float32)
        self.normaliser = q.new_zeros((heads, count, 1), dtype=torch.float32)
        self.weighted = q.new_zeros((heads, count, head_dim), dtype=torch.float32)

    def add(self, k: Tensor, v: Tensor) -> None:
        scores = (self.q @ k.transpose(-1, -2)).float()
        new_max = torch.maximum(self.running_max, scores.amax(-1, keepdim=True))
        rescale, probs = (self.running_max - new_max).exp(), (scores - new_max).exp()
        self.normaliser = self.normaliser * rescale + probs.sum(-1, keepdim=True)
        self.weighted = self.weighted * rescale + probs @ v.float()
        self.running_max = new_max

    def result(self) -> Tensor:
        return (self.weighted / self.normaliser).to(self.q.dtype)


def _layer_pass(
    layer: TransformerLayer,
    x: Tensor,
    rotary: tuple[Tensor, Tensor],
    backend: AttentionBackend,
    chunks: list[tuple[int, int]],
) -> None:
    """One transformer layer over ``x`` [L, d] in place (see the module docstring).

    Each chunk's rows are the global positions followed by ``[max(s - window, g), e + window)``:
    distances between non-global rows are those of the sequence and the globals lead, so the
    pattern's banded backend computes the chunk's queries exactly.
    """
    cos, sin = rotary
    length = x.shape[0]
    window, num_global = backend.pattern.window, min(backend.pattern.num_global, length)
    global_q, global_k, global_v = _project(
        layer, x[:num_global], cos[:num_global], sin[:num_global]
    )
    global_queries = _GlobalQueries(global_q)
    if num_global:
        global_queries.add(global_k, global_v)
    old_global = x[:num_global].clone()
    halo = x[:0].clone()  # old rows [max(g, start - window), start)
    for start, end in chunks:
        first = max(start, num_global)  # the global rows are finished after the pass
        if first >= end:
            continue
        low, high = max(num_global, start - window), min(length, end + window)
        window_rows = torch.cat([halo[halo.shape[0] - (first - low) :], x[first:high]])
        q, k, v = _project(layer, window_rows, cos[low:high], sin[low:high])
        own = slice(first - low, end - low)
        global_queries.add(k[:, own], v[:, own])  # the chunks cover every key once
        q = torch.cat([global_q, q], dim=1)
        k = torch.cat([global_k, k], dim=1)
        v = torch.cat([global_v, v], dim=1)
        attention = backend.prepare(None, q.shape[1], x.device)
        attended = attention(q[None], k[None], v[None])[0]
        queries = slice(num_global + first - low, num_global + end - low)
        updated = _finish(layer, x[first:end], attended[:, queries])
        if window:
            halo = torch.cat([halo, x[max(first, end - window) : end].clone()])[-window:]
        x[first:end] = updated
    if num_global:
        x[:num_global] = _finish(layer, old_global, global_queries.result())
