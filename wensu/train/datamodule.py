"""LightningDataModule over a ``wensu-preprocess`` dataset directory.

Training batches come from :class:`~wensu.data.sampler.TokenBudgetBatchSampler` used as the
DataLoader's ``batch_sampler``, sharded by the trainer's rank and world size (Lightning's own
distributed sampler injection is switched off by the training app). Records longer than the
crop are randomly cropped, or with ``concatenate=True`` all records are packed into windows of
``crop_length`` tokens (long-context training).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

from wensu.alphabet import get_alphabet
from wensu.data.dataset import ShardedDataset
from wensu.data.sampler import TokenBudgetBatchSampler
from wensu.train.examples import CroppedRecords, PackedWindows
from wensu.train.loader import (
    ResumableBatchSampler,
    ResumableDataLoader,
    collate_examples,
    loader_generator,
)

VERIFY_MODES = ("open", "lazy", "none")


def check_budget(verify: str, max_tokens: int, length_name: str, length: int, what: str) -> None:
    """Refuse an unknown ``verify`` mode or a token budget that cannot hold one full example
    (``length`` tokens, the ``data.<length_name>`` setting)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"data.verify must be one of {VERIFY_MODES}, got {verify!r}")
    if max_tokens < length:
        raise ValueError(
            f"data.max_tokens ({max_tokens}) must be >= data.{length_name} ({length}) so that "
            f"{what} fits a batch"
        )


class ResumableDataModule(LightningDataModule):
    """Rank sharding and resumable training-batch order shared by wensu's data modules.

    Subclasses build ``self.train_sampler`` with :meth:`_resumable` in ``train_dataloader``;
    the consumed batches then travel in Lightning's checkpoint (``state_dict``) and a restored
    run continues at the first batch it had not trained on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train_sampler: ResumableBatchSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _budget_sampler(
        self,
        lengths: Any,
        max_tokens: int,
        *,
        shuffle: bool,
        extra_tokens_per_seq: int,
        max_batch_size: int | None,
        kind: type[TokenBudgetBatchSampler] = TokenBudgetBatchSampler,
    ) -> TokenBudgetBatchSampler:
        """A token-budget sampler over this rank's shard, seeded with ``self.seed``."""
        rank, world = self._rank_and_world()
        return kind(
            lengths,
            max_tokens,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            drop_last=False,
            extra_tokens_per_seq=extra_tokens_per_seq,
            max_batch_size=max_batch_size,
        )

    def _resumable(self, sampler: TokenBudgetBatchSampler) -> ResumableBatchSampler:
        """Wrap the training sampler as ``self.train_sampler``, restoring any pending state."""
        self.train_sampler = ResumableBatchSampler(sampler)
        if self._pending_state is not None:
            self.train_sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.train_sampler

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training and self.train_sampler is not None:
            self.train_sampler.mark_consumed(batch["epoch"], batch["batch_index"])
        return batch

    # ---- resume (the loader's state also travels with Lightning's loop state) --------------

    def state_dict(self) -> dict[str, Any]:
        if self.train_sampler is None:
            return {}
        return {"train_sampler": self.train_sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler_state = state.get("train_sampler")
        if not sampler_state:
            return
        if self.train_sampler is not None:
            self.train_sampler.load_state_dict(sampler_state)
        else:
            self._pending_state = dict(sampler_state)


class ProteinDataModule(ResumableDataModule):
    """Train/validation loaders over one dataset directory (``manifest.json`` + shards).

    Args:
        dataset_dir: output directory of ``wensu-preprocess``.
        max_tokens: padded tokens per training batch and device.
        val_max_tokens: the same for validation (default: ``max_tokens``).
        crop_length: tokens per example including ``<cls>``/``<eos>`` (or window length).
        concatenate: pack records into windows of ``crop_length`` tokens instead of cropping.
        seed: seeds batch order, crop offsets and packing order (with the epoch).
        verify: when shard checksums are checked (``open``: all, before training starts).
        num_workers, pin_memory, prefetch_factor: DataLoader settings.
        max_batch_size: optional cap on examples per batch.
        pad_to_multiple: pad batch length to a multiple of this (8 suits tensor cores).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        *,
        train_split: str = "train",
        val_split: str = "valid",
        max_tokens: int = 8192,
        val_max_tokens: int | None = None,
        crop_length: int = 1024,
        concatenate: bool = False,
        seed: int = 0,
        verify: str = "open",
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        max_batch_size: int | None = None,
        pad_to_multiple: int = 8,
    ):
        super().__init__()
        check_budget(verify, max_tokens, "crop_length", crop_length, "a full-length example")
        self.dataset_dir = Path(dataset_dir)
        self.train_split, self.val_split = train_split, val_split
        self.max_tokens = int(max_tokens)
        self.val_max_tokens = int(val_max_tokens or max_tokens)
        self.crop_length = int(crop_length)
        self.concatenate = bool(concatenate)
        self.seed = int(seed)
        self.verify = verify
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = prefetch_factor
        self.max_batch_size = max_batch_size
        self.pad_to_multiple = int(pad_to_multiple)
        self.alphabet = get_alphabet()
        self.train_records: ShardedDataset | None = None
        self.val_records: ShardedDataset | None = None
        self.train_set: CroppedRecords | PackedWindows | None = None
        self.val_set: CroppedRecords | PackedWindows | None = None

    # ---- datasets ---------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Open (and with ``verify=open`` checksum) both splits; safe to call repeatedly."""
        if self.train_set is None:
            self.train_records = ShardedDataset(self.dataset_dir, self.train_split, self.verify)
            self.train_set = self._examples(self.train_records, train=True)
        if self.val_set is None:
            self.val_records = ShardedDataset(self.dataset_dir, self.val_split, self.verify)
            self.val_set = self._examples(self.val_records, train=False)

    def _examples(self, records: ShardedDataset, train: bool) -> CroppedRecords | PackedWindows:
        if self.concatenate:
            return PackedWindows(records, self.crop_length, seed=self.seed, shuffle=train)
        # Validation crops ignore the epoch, so they are the same in every evaluation.
        return CroppedRecords(
            records, self.crop_length, seed=self.seed, fixed_epoch=None if train else 0
        )

    # ---- loaders ----------------------------------------------------------------------------

    def _collate(self):
        return partial(
            collate_examples,
            pad_idx=self.alphabet.padding_idx,
            pad_to_multiple=self.pad_to_multiple,
        )

    def _loader(self, dataset, sampler, seed: int) -> ResumableDataLoader:
        workers = self.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:
            extra["persistent_workers"] = True
            if self.prefetch_factor is not None:
                extra["prefetch_factor"] = int(self.prefetch_factor)
        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collate(),
            num_workers=workers,
            pin_memory=self.pin_memory,
            generator=loader_generator(seed),
            **extra,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        self.setup("fit")
        sampler = self._budget_sampler(
            self.train_set.lengths,
            self.max_tokens,
            shuffle=True,
            extra_tokens_per_seq=self.train_set.extra_tokens_per_example,
            max_batch_size=self.max_batch_size,
        )
        return self._loader(self.train_set, self._resumable(sampler), self.seed)

    def val_dataloader(self) -> ResumableDataLoader:
        self.setup("validate")
        sampler = self._budget_sampler(
            self.val_set.lengths,
            self.val_max_tokens,
            shuffle=False,
            extra_tokens_per_seq=self.val_set.extra_tokens_per_example,
            max_batch_size=self.max_batch_size,
        )
        return self._loader(self.val_set, ResumableBatchSampler(sampler), self.seed + 1)
