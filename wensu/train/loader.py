"""Resumable batching: the sampler position saved in checkpoints is what training consumed.

A DataLoader (and Lightning's fetcher) runs ahead of training, so the sampler's own count of
yielded batches overshoots. Every item therefore carries ``(epoch, batch_index)``; the
DataModule reports each batch that reaches the training step (:meth:`mark_consumed`) and the
checkpointed state is ``TokenBudgetBatchSampler.state_dict(consumed=...)``. Lightning saves and
restores the state of a DataLoader that has ``state_dict``/``load_state_dict``
(:class:`ResumableDataLoader`) with the training loop, so a resumed run continues at the first
batch the killed run had not finished.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from wensu.data.collate import collate_tokens
from wensu.data.sampler import TokenBudgetBatchSampler


class ResumableBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Wraps a :class:`TokenBudgetBatchSampler`; yields ``[(epoch, batch_index, index), ...]``."""

    def __init__(self, sampler: TokenBudgetBatchSampler):
        self.sampler = sampler
        self.consumed = 0

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.sampler.epoch:
            self.consumed = 0
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            # The sampler counts the batches it has yielded in this epoch, this one included.
            batch_index = self.sampler.state_dict()["consumed"] - 1
            yield [(epoch, batch_index, index) for index in batch]

    def mark_consumed(self, epoch: int, batch_index: int) -> None:
        """Training has taken batch ``batch_index`` of ``epoch``."""
        if int(epoch) == self.sampler.epoch:
            self.consumed = int(batch_index) + 1

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict(consumed=self.consumed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.consumed = int(state["consumed"])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` whose position Lightning checkpoints."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)


def collate_examples(
    examples: Sequence[dict[str, Any]], pad_idx: int = 1, pad_to_multiple: int = 1
) -> dict[str, Any]:
    """Batch examples from :mod:`wensu.train.examples`.

    Returns ``tokens`` (LongTensor [B, L], right-padded), ``ids`` (record ids in the batch, in
    order), ``num_tokens`` (non-pad tokens, a python int so logging needs no device sync),
    and the batch's ``epoch`` / ``batch_index`` (-1 outside a resumable sampler).
    """
    tokens = collate_tokens(
        [e["tokens"] for e in examples], pad_idx, pad_to_multiple=pad_to_multiple
    )
    first = examples[0] if examples else {"epoch": 0, "batch_index": -1}
    return {
        "tokens": tokens,
        "ids": [record_id for e in examples for record_id in e["ids"]],
        "num_tokens": int(sum(len(e["tokens"]) for e in examples)),
        "epoch": int(first["epoch"]),
        "batch_index": int(first["batch_index"]),
    }


def loader_generator(seed: int) -> torch.Generator:
    """A private generator for DataLoader worker seeds, so iterators never draw from torch's global
    generator (which would shift dropout after a resume)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator
