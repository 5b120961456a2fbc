"""LightningDataModule over a cell dataset directory (``wensu.preprocessing.cells`` output).

Batches are token-budgeted like protein batches (:class:`TokenBudgetBatchSampler` inside the
same :class:`ResumableBatchSampler`), so a kill -9 run resumes at the first batch it had not
trained on. A cell with more than ``max_genes`` expressed genes contributes a random subset of
them, drawn from ``(seed, epoch, cell index)`` (validation: a fixed draw), so the subsets are the
same in every worker and after a restart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wensu.data.cells import CellShardDataset
from wensu.data.collate import collate_tokens
from wensu.data.sampler import TokenBudgetBatchSampler
from wensu.model.cell_encoder import PAD_IDX, select_genes
from wensu.train.datamodule import VERIFY_MODES as VERIFY_MODES  # re-exported
from wensu.train.datamodule import ResumableDataModule, check_budget
from wensu.train.examples import _unpack
from wensu.train.loader import ResumableBatchSampler, ResumableDataLoader, loader_generator


class CellExamples(Dataset):
    """Cells of one split as ``{"genes", "bins", "id", "epoch", "batch_index"}`` with at most
    ``max_genes`` tokens each; ``lengths`` is what the token-budget sampler batches by."""

    def __init__(
        self,
        cells: CellShardDataset,
        max_genes: int,
        seed: int = 0,
        fixed_epoch: int | None = None,
    ):
        if max_genes < 1:
            raise ValueError(f"data.max_genes must be >= 1, got {max_genes}")
        self.cells = cells
        self.max_genes = int(max_genes)
        self.seed = int(seed)
        self.fixed_epoch = fixed_epoch
        self.lengths = np.minimum(cells.lengths, self.max_genes)

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, item: tuple[int, int, int] | int) -> dict[str, Any]:
        epoch, batch_index, index = _unpack(item)
        cell = self.cells[index]
        draw_epoch = epoch if self.fixed_epoch is None else self.fixed_epoch
        rng = np.random.default_rng([self.seed, draw_epoch, index])
        genes, bins = select_genes(cell["genes"], cell["bins"], self.max_genes, rng)
        return {
            "genes": genes,
            "bins": bins,
            "id": f"{cell['dataset']}/{cell['id']}",
            "epoch": epoch,
            "batch_index": batch_index,
        }


def collate_cell_examples(
    examples: Sequence[dict[str, Any]], pad_to_multiple: int = 1
) -> dict[str, Any]:
    """``genes`` (pad = <pad>), ``bins`` (pad = 0), ``padding_mask`` (True = pad) [B, L];
    ``num_tokens`` (python int), ``ids``, ``epoch``, ``batch_index``; ``tokens`` is ``genes``
    again for the shared training callbacks (they count examples from ``tokens``)."""
    genes = collate_tokens([e["genes"] for e in examples], PAD_IDX, pad_to_multiple=pad_to_multiple)
    bins = collate_tokens([e["bins"] for e in examples], 0, pad_to_multiple=pad_to_multiple)
    lengths = torch.tensor([len(e["genes"]) for e in examples], dtype=torch.long)
    padding_mask = torch.arange(genes.shape[1])[None, :] >= lengths[:, None]
    first = examples[0] if examples else {"epoch": 0, "batch_index": -1}
    return {
        "genes": genes,
        "bins": bins,
        "padding_mask": padding_mask,
        "tokens": genes,
        "num_tokens": int(lengths.sum()),
        "ids": [e["id"] for e in examples],
        "epoch": int(first["epoch"]),
        "batch_index": int(first["batch_index"]),
    }


class FixedOrderBudgetSampler(TokenBudgetBatchSampler):
    """Validation batches: one fixed shuffled order (epoch 0), whatever epoch training is in,
    so ``limit_val_batches`` always scores the same representative cells. (Lightning calls
    ``set_epoch`` on ``loader.batch_sampler.sampler`` too, so the no-op must live here.)"""

    def set_epoch(self, epoch: int) -> None:
        return None


class FixedOrderBatchSampler(ResumableBatchSampler):
    """A :class:`ResumableBatchSampler` whose epoch never changes (see FixedOrderBudgetSampler)."""

    def set_epoch(self, epoch: int) -> None:
        return None


class CellDataModule(ResumableDataModule):
    """Train/validation loaders over one cell dataset directory.

    Args:
        dataset_dir: output directory of ``wensu-preprocess data=cells``.
        max_genes: genes per cell and step (random subset above it).
        max_tokens: padded gene tokens per training batch and device.
        max_cells: optional cap on cells per batch.
        val_max_tokens: the same for validation (default ``max_tokens``).
        seed: batch order and gene subsets (with the epoch).
        verify: when shard checksums are checked (``open``: all, before training).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        *,
        kind: str = "cells",
        train_split: str = "train",
        val_split: str = "valid",
        max_genes: int = 512,
        max_tokens: int = 8192,
        max_cells: int | None = None,
        val_max_tokens: int | None = None,
        seed: int = 0,
        verify: str = "open",
        num_workers: int = 0,
        pad_to_multiple: int = 8,
    ):
        super().__init__()
        if kind != "cells":
            raise ValueError(f"data.kind must be 'cells' for the cell data module, got {kind!r}")
        check_budget(verify, max_tokens, "max_genes", max_genes, "a full cell")
        self.dataset_dir = Path(dataset_dir)
        self.train_split, self.val_split = train_split, val_split
        self.max_genes = int(max_genes)
        self.max_tokens = int(max_tokens)
        self.max_cells = max_cells
        self.val_max_tokens = int(val_max_tokens or max_tokens)
        self.seed = int(seed)
        self.verify = verify
        self.num_workers = int(num_workers)
        self.pad_to_multiple = int(pad_to_multiple)
        self.train_cells: CellShardDataset | None = None
        self.val_cells: CellShardDataset | None = None
        self.train_set: CellExamples | None = None
        self.val_set: CellExamples | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open (and with ``verify=open`` checksum) both splits; safe to call repeatedly."""
        if self.train_set is None:
            self.train_cells = CellShardDataset(self.dataset_dir, self.train_split, self.verify)
            self.train_set = CellExamples(self.train_cells, self.max_genes, self.seed)
        if self.val_set is None:
            self.val_cells = CellShardDataset(self.dataset_dir, self.val_split, self.verify)
            self.val_set = CellExamples(self.val_cells, self.max_genes, self.seed, fixed_epoch=0)

    def _loader(self, dataset, sampler, seed: int) -> ResumableDataLoader:
        extra: dict[str, Any] = {"persistent_workers": True} if self.num_workers > 0 else {}
        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=partial(collate_cell_examples, pad_to_multiple=self.pad_to_multiple),
            num_workers=self.num_workers,
            generator=loader_generator(seed),
            **extra,
        )

    def _sampler(self, dataset: CellExamples, max_tokens: int, shuffle: bool, fixed=False):
        return self._budget_sampler(
            dataset.lengths,
            max_tokens,
            shuffle=shuffle,
            extra_tokens_per_seq=0,
            max_batch_size=self.max_cells,
            kind=FixedOrderBudgetSampler if fixed else TokenBudgetBatchSampler,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        self.setup("fit")
        sampler = self._sampler(self.train_set, self.max_tokens, shuffle=True)
        return self._loader(self.train_set, self._resumable(sampler), self.seed)

    def val_dataloader(self) -> ResumableDataLoader:
        self.setup("validate")
        sampler = self._sampler(self.val_set, self.val_max_tokens, shuffle=True, fixed=True)
        return self._loader(self.val_set, FixedOrderBatchSampler(sampler), self.seed + 1)
