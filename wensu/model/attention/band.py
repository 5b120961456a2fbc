"""Block layout of the sliding-window + global pattern, shared by the blocked attention paths.

Queries are cut into blocks of `block` rows. Query block n sees the key blocks n - r .. n + r
(r = ceil(w / block) blocks each side: its "span" of (2r + 1) * block keys) plus the g global
keys; masks built per step from positions, with the pattern's own `visible` rule, make the
result exact. Global keys inside the span are masked there so they count once; the g global
query rows (which see every key) are owned by a separate pass and masked out of the band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from wensu.model.attention.pattern import AttentionPattern

# Score elements (B x heads x rows x keys) per step: ~2 MB per float32 score block. Backward
# holds about four such blocks at once (scores, probabilities, their gradients).
SCORE_ELEMENTS_PER_STEP = 1 << 19


@dataclass(frozen=True)
class BandGeometry:
    """Block layout of one sequence length under a pattern."""

    pattern: AttentionPattern
    seq_len: int
    block: int

    @property
    def window(self) -> int:
        return self.pattern.effective_window(self.seq_len)

    @property
    def num_global(self) -> int:
        return min(self.pattern.num_global, self.seq_len)

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.seq_len / self.block)

    @property
    def reach(self) -> int:
        """Key blocks on each side of a query block that its window can touch."""
        return math.ceil(self.window / self.block)

    @property
    def span(self) -> int:
        """Band keys scored per query block."""
        return (2 * self.reach + 1) * self.block

    def is_interior(self, blocks: slice) -> bool:
        """True when no query block of `blocks` touches an edge, a global row or global key:
        all of them then share one relative mask (`interior_mask`)."""
        first_key = (blocks.start - self.reach) * self.block
        return first_key >= self.num_global and (blocks.stop + self.reach) * self.block <= (
            self.seq_len
        )

    @cached_property
    def interior_mask(self) -> Tensor:
        """[block, g + span] visibility shared by interior query blocks (CPU, bool)."""
        start = (self.num_global // self.block + self.reach + 1) * self.block
        first_key = start - self.reach * self.block
        query = torch.arange(start, start + self.block)[:, None]
        key = first_key + torch.arange(self.span)[None]
        in_band = self.pattern.visible(query, key)
        to_global = self.pattern.visible(query, torch.arange(self.num_global)[None])
        return torch.cat([to_global.expand(self.block, -1), in_band], dim=-1)

    def steps(self, batch: int, heads: int, split_heads: bool = True) -> list[tuple[slice, slice]]:
        """(query blocks, heads) per step, blocks outer so one mask serves every head group.

        Steps hold about SCORE_ELEMENTS_PER_STEP scores (at least one block of one head, or
        of all heads when `split_heads` is False).
        """
        per_head_block = batch * self.block * (self.num_global + self.span)
        heads_per_step = max(1, min(heads, SCORE_ELEMENTS_PER_STEP // per_head_block))
        if not split_heads:
            heads_per_step = heads
        head_groups = math.ceil(heads / heads_per_step)
        heads_per_step = math.ceil(heads / head_groups)  # even groups
        blocks_per_step = 1
        if heads_per_step == heads:
            blocks_per_step = max(1, SCORE_ELEMENTS_PER_STEP // (per_head_block * heads))
        return [
            (slice(b, min(b + blocks_per_step, self.num_blocks)), slice(h, h + heads_per_step))
            for b in range(0, self.num_blocks, blocks_per_step)
            for h in range(0, heads, heads_per_step)
        ]


def rows(x: Tensor, start: int, stop: int, fill: float | bool = 0) -> Tensor:
    """x[:, :, start:stop] (rows are dim 2) where rows outside [0, len) are `fill`."""
    length = x.shape[2]
    low, high = max(start, 0), min(stop, length)
    part = x[:, :, low:high]
    if low - start or stop - high:
        part = F.pad(part, (0, 0) * (x.ndim - 3) + (low - start, stop - high), value=fill)
    return part


def band_mask(
    geo: BandGeometry, padding: Tensor | None, blocks: slice, device: torch.device
) -> Tensor:
    """Visible keys [B|1, 1, n, block, g + span] (global keys first) for query `blocks`.

    Global query rows (< g) and rows past the end see nothing here: the global pass owns them.
    """
    block, g, seq_len = geo.block, geo.num_global, geo.seq_len
    count = blocks.stop - blocks.start
    if geo.is_interior(blocks):
        mask = geo.interior_mask.to(device).expand(1, count, -1, -1)
    else:
        ints = dict(device=device, dtype=torch.int64)
        query = torch.arange(blocks.start * block, blocks.stop * block, **ints)
        query = query.view(-1, block, 1)
        first_key = (torch.arange(blocks.start, blocks.stop, **ints) - geo.reach) * block
        key = first_key.view(-1, 1, 1) + torch.arange(geo.span, **ints)
        owned = (query >= g) & (query < seq_len)
        in_band = geo.pattern.visible(query, key) & (key >= g) & (key < seq_len) & owned
        to_global = geo.pattern.visible(query, torch.arange(g, **ints)) & owned
        mask = torch.cat([to_global, in_band], dim=-1)[None]  # [1, n, block, g + span]
    if padding is not None:
        low, high = (blocks.start - geo.reach) * block, (blocks.stop + geo.reach) * block
        band_pad = rows(padding[:, None], low, high, fill=True)[:, 0]
        band_pad = band_pad.unfold(1, geo.span, block)  # [B, n, span]
        global_pad = padding[:, None, :g].expand(-1, count, -1)
        mask = mask & ~torch.cat([global_pad, band_pad], dim=-1)[:, :, None, :]
    return mask[:, None]


def global_row_mask(geo: BandGeometry, padding: Tensor | None, keys: slice, device) -> Tensor:
    """Visible keys [B|1, 1, g, n_keys] of the global query rows for key positions `keys`."""
    ints = dict(device=device, dtype=torch.int64)
    query = torch.arange(geo.num_global, **ints)[:, None]
    key = torch.arange(keys.start, keys.stop, **ints)[None]
    mask = geo.pattern.visible(query, key)[None, None]
    if padding is not None:
        mask = mask & ~padding[:, None, None, keys]
    return mask


def write_rows(target: Tensor, heads: slice, start: int, values: Tensor) -> None:
    """target[:, heads, start:start+n] = values (rows are dim 2), clipped to the sequence."""
    stop = min(start + values.shape[2], target.shape[2])
    target[:, heads, start:stop] = values[:, :, : stop - start].to(target.dtype)


def add_span(target: Tensor, heads: slice, geo: BandGeometry, blocks: slice, grads: Tensor):
    """Add span gradients [B, h, n, span, D] onto the key rows of `target` [B, H, L, D].

    Offset o of query block m is key block m - reach + o, so for a fixed o the blocks of a
    step map to consecutive key rows: one slice add per offset.
    """
    per_offset = grads.unflatten(-2, (2 * geo.reach + 1, geo.block))  # [B, h, n, o, blk, D]
    for offset in range(2 * geo.reach + 1):
        first = (blocks.start + offset - geo.reach) * geo.block
        part = per_offset[:, :, :, offset].flatten(2, 3)  # key rows first .. first + n*blk
        low, high = max(first, 0), min(first + part.shape[2], geo.seq_len)
        if high > low:
            target[:, heads, low:high] += part[:, :, low - first : high - first]
