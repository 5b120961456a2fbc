"""Training examples from dataset records: random crops, or packed windows for long context.

Both datasets take items ``(epoch, batch_index, record_or_window_index)`` (what
:class:`wensu.train.loader.ResumableBatchSampler` yields), so the crop offsets and packing
layout are pure functions of (seed, epoch, index): the same in every DataLoader worker, after a
restart, and with persistent workers that never see ``set_epoch``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from wensu.data.dataset import ShardedDataset

Item = tuple[int, int, int] | int


def _unpack(item: Item) -> tuple[int, int, int]:
    """(epoch, batch_index, index); a bare index means epoch 0, batch -1 (direct use)."""
    if isinstance(item, tuple | list):
        epoch, batch_index, index = item
        return int(epoch), int(batch_index), int(index)
    return 0, -1, int(item)


class CroppedRecords(Dataset):
    """Each record as ``<cls> residues <eos>``, cropped to at most ``crop_length`` tokens.

    A record with more than ``crop_length - 2`` residues is cut to a window of that many
    residues starting at an offset drawn from ``(seed, epoch, index)`` (uniform over all
    offsets); with ``random_crop=False`` the window starts at the first residue. With
    ``fixed_epoch`` set (validation) the crops ignore the epoch, so every evaluation sees the
    same examples.
    ``lengths`` (residues per example) is what the token-budget sampler batches by.
    """

    extra_tokens_per_example = 2

    def __init__(
        self,
        records: ShardedDataset,
        crop_length: int,
        seed: int = 0,
        random_crop: bool = True,
        fixed_epoch: int | None = None,
    ):
        if crop_length < 3:
            raise ValueError(f"crop_length must be >= 3 tokens (<cls> x <eos>), got {crop_length}")
        self.records = records
        self.crop_length = int(crop_length)
        self.max_residues = self.crop_length - 2
        self.seed = int(seed)
        self.random_crop = random_crop
        self.fixed_epoch = fixed_epoch
        self.lengths = np.minimum(records.lengths, self.max_residues)

    def __len__(self) -> int:
        return len(self.records)

    def crop_start(self, epoch: int, index: int, residues: int) -> int:
        """Offset of the crop window for record ``index`` with ``residues`` residues."""
        spare = residues - self.max_residues
        if spare <= 0 or not self.random_crop:
            return 0
        rng = np.random.default_rng([self.seed, epoch, index])
        return int(rng.integers(0, spare + 1))

    def __getitem__(self, item: Item) -> dict[str, Any]:
        epoch, batch_index, index = _unpack(item)
        if self.fixed_epoch is not None:
            epoch = self.fixed_epoch
        record = self.records[index]
        tokens = record["tokens"]
        residues = tokens.size - 2
        if residues > self.max_residues:
            start = 1 + self.crop_start(epoch, index, residues)
            cropped = np.empty(self.crop_length, dtype=np.int64)
            cropped[0], cropped[-1] = tokens[0], tokens[-1]
            cropped[1:-1] = tokens[start : start + self.max_residues]
            tokens = cropped
        return {"tokens": tokens, "ids": [record["id"]], "epoch": epoch, "batch_index": batch_index}


class PackedWindows(Dataset):
    """Records joined as ``<cls> a <eos><cls> b <eos> ...`` and cut into windows.

    Per epoch the records are ordered by a permutation drawn from ``(seed, epoch)`` (or kept in
    order with ``shuffle=False``), concatenated, and cut into consecutive windows of
    ``window`` tokens (the last one shorter); sequences longer than a window continue in the
    next one. The window count does not depend on the epoch, so the sampler is built once.
    ``lengths`` holds tokens per window (specials included, so no extra tokens are added).
    """

    extra_tokens_per_example = 0

    def __init__(self, records: ShardedDataset, window: int, seed: int = 0, shuffle: bool = True):
        if window < 3:
            raise ValueError(f"window must be >= 3 tokens, got {window}")
        self.records = records
        self.window = int(window)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.record_tokens = records.lengths.astype(np.int64) + 2
        self.total_tokens = int(self.record_tokens.sum())
        count = -(-self.total_tokens // self.window)
        self.lengths = np.full(count, self.window, dtype=np.int64)
        if count:
            self.lengths[-1] = self.total_tokens - (count - 1) * self.window
        self._layout_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.lengths.size)

    def layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(record order, end offset of each ordered record in the concatenated stream)."""
        if self._layout_cache is not None and self._layout_cache[0] == epoch:
            return self._layout_cache[1], self._layout_cache[2]
        n = self.record_tokens.size
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        ends = np.cumsum(self.record_tokens[order])
        self._layout_cache = (epoch, order, ends)
        return order, ends

    def __getitem__(self, item: Item) -> dict[str, Any]:
        epoch, batch_index, index = _unpack(item)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        order, ends = self.layout(epoch)
        start = index * self.window
        stop = min(start + self.window, self.total_tokens)
        k = int(np.searchsorted(ends, start, side="right"))
        pieces, ids = [], []
        position = start
        while position < stop:
            record_index = int(order[k])
            record_start = int(ends[k]) - int(self.record_tokens[record_index])
            record = self.records[record_index]
            lo, hi = position - record_start, min(stop - record_start, record["tokens"].size)
            pieces.append(record["tokens"][lo:hi])
            ids.append(record["id"])
            position = record_start + hi
            k += 1
        return {
            "tokens": np.concatenate(pieces),
            "ids": ids,
            "epoch": epoch,
            "batch_index": batch_index,
        }
