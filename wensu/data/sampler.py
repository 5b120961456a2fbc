"""Token-budget batching: batches of similar-length records, sharded across distributed ranks.

Per epoch the records are sorted by length with ties broken by a permutation drawn from
``(seed, epoch)`` (fairseq's scheme), packed greedily into batches whose padded size
``batch_size * (longest + extra_tokens_per_seq)`` fits ``max_tokens``, and the batch order is
shuffled with the same generator. Because only ties are permuted, the batch *sizes* are the same
every epoch, so every rank knows the step count up front and it never changes.

Distributed ranks take batches round-robin (rank ``r`` gets batches ``r, r + R, ...``) and
always get the same number of steps, as DDP requires:

* ``drop_last=False``: before shuffling, the largest batches are split in two until the batch
  count is a multiple of ``num_replicas``, so every record appears exactly once across ranks and
  no batch is empty. Only when there are too few records to split that far (fewer records than
  the next multiple of ``num_replicas``, e.g. a tiny validation split) are the first batches
  repeated; :attr:`num_padding_batches` reports how many.
* ``drop_last=True``: the trailing ``count % num_replicas`` batches of the shuffled order are
  dropped, so no record is repeated.

Use it as a DataLoader ``batch_sampler``: the DataLoader hands whole batches to its workers, so
workers of one rank split that rank's batches without duplicates or gaps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Yields lists of record indices whose padded token count is at most ``max_tokens``.

    A record longer than ``max_tokens - extra_tokens_per_seq`` cannot form a batch on its own and
    raises ``ValueError`` at construction: crop sequences before batching (the DataModule does).
    ``max_batch_size`` optionally caps the number of records per batch.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        extra_tokens_per_seq: int = 2,
        max_batch_size: int | None = None,
    ):
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1:
            raise ValueError(f"lengths must be one-dimensional, got shape {lengths.shape}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, {num_replicas=}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        padded = lengths + extra_tokens_per_seq
        if lengths.size and int(padded.max()) > max_tokens:
            worst = int(np.argmax(padded))
            too_long = int(np.count_nonzero(padded > max_tokens))
            raise ValueError(
                f"{too_long} record(s) exceed max_tokens={max_tokens} on their own (longest: "
                f"index {worst}, {int(lengths[worst])} residues + {extra_tokens_per_seq} "
                f"special tokens); crop sequences to at most {max_tokens - extra_tokens_per_seq}"
            )
        self.lengths = lengths
        self.max_tokens = int(max_tokens)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.extra_tokens_per_seq = int(extra_tokens_per_seq)
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self._resume_from = 0
        self._consumed = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None
        self._sizes = self._plan_sizes()
        self.num_padding_batches = 0 if drop_last else self._padding_needed(len(self._sizes))

    # ---- epoch and resume -------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order to produce; a new epoch starts from its first batch."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._resume_from = 0
            self._consumed = 0

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Epoch, seed and batches of this epoch already consumed by this rank.

        The count defaults to the batches this sampler has yielded; a DataLoader with workers
        prefetches ahead of training, so pass ``consumed`` (batches actually trained on in this
        epoch) to resume at exactly the next unseen batch.
        """
        done = self._consumed if consumed is None else int(consumed)
        return {"epoch": self.epoch, "seed": self.seed, "consumed": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues epoch ``state["epoch"]`` after ``consumed``."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._resume_from = int(state["consumed"])
        self._consumed = self._resume_from
        self._cache = None

    # ---- iteration --------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches this rank yields in a full epoch (the same every epoch)."""
        total = len(self._sizes)
        if self.drop_last:
            return total // self.num_replicas
        return (total + self.num_padding_batches) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.rank_batches()
        start = min(self._resume_from, len(mine))
        self._resume_from = 0
        self._consumed = start
        for batch in mine[start:]:
            self._consumed += 1
            yield batch.tolist()

    def rank_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All batches this rank gets in ``epoch`` (default: the current one), in order."""
        batches = self.epoch_batches(self.epoch if epoch is None else epoch)
        usable = len(self) * self.num_replicas
        if len(batches) < usable:
            batches = batches + batches[: usable - len(batches)]
        return batches[self.rank : usable : self.num_replicas]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of ``epoch`` across all ranks, in the shuffled global order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle:
            tie_break = rng.permutation(self.lengths.size)
            order = tie_break[np.argsort(self.lengths[tie_break], kind="stable")]
        else:
            order = np.argsort(self.lengths, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(self._sizes)))
        batches = [order[bounds[k] : bounds[k + 1]] for k in range(len(self._sizes))]
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    # ---- planning ---------------------------------------------------------------------------

    def _plan_sizes(self) -> list[int]:
        """Batch sizes over the length-sorted records, split to a multiple of the rank count."""
        padded = np.sort(self.lengths) + self.extra_tokens_per_seq
        cap = self.max_batch_size or padded.size
        sizes: list[int] = []
        start = 0
        while start < padded.size:
            # k * padded[start + k - 1] grows with k, so the records that fit form a prefix.
            window = min(cap, self.max_tokens // max(int(padded[start]), 1), padded.size - start)
            counts = np.arange(1, window + 1)
            fits = int(np.count_nonzero(counts * padded[start : start + window] <= self.max_tokens))
            sizes.append(max(fits, 1))
            start += sizes[-1]
        if not self.drop_last:
            while len(sizes) % self.num_replicas and max(sizes, default=1) > 1:
                # Splitting keeps every half within budget; halves stay adjacent in length order.
                k = int(np.argmax(sizes))
                sizes[k : k + 1] = [sizes[k] - sizes[k] // 2, sizes[k] // 2]
        return sizes

    def _padding_needed(self, count: int) -> int:
        return (-count) % self.num_replicas
