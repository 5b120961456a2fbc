"""TokenBudgetBatchSampler on real UniParc lengths: budget, coverage, determinism, resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from wensu.data.sampler import TokenBudgetBatchSampler

UNIPARC = "sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta"
MAX_TOKENS = 6000
CROP = 1022


def fasta_lengths(path: Path) -> np.ndarray:
    lengths: list[int] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            lengths.append(0)
        else:
            lengths[-1] += len(line.strip())
    return np.asarray(lengths, dtype=np.int64)


@pytest.fixture(scope="module")
def lengths() -> np.ndarray:
    raw = fasta_lengths(require_shared(UNIPARC))
    assert raw.size == 776 and raw.max() > CROP  # the real file needs cropping, as in training
    return np.minimum(raw, CROP)


def greedy_reference(lengths: np.ndarray, max_tokens: int, extra: int) -> list[list[int]]:
    """Plain-loop packing over the stably length-sorted records (the unshuffled plan)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in np.argsort(lengths, kind="stable").tolist():
        width = int(lengths[i]) + extra  # ascending, so the newest record is the longest
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def all_rank_batches(lengths, num_replicas, epoch=0, **kwargs) -> list[list[list[int]]]:
    per_rank = []
    for rank in range(num_replicas):
        sampler = TokenBudgetBatchSampler(
            lengths, MAX_TOKENS, num_replicas=num_replicas, rank=rank, **kwargs
        )
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    return per_rank


def test_unshuffled_batches_equal_greedy_reference(lengths):
    sampler = TokenBudgetBatchSampler(lengths, MAX_TOKENS, shuffle=False)
    assert list(sampler) == greedy_reference(lengths, MAX_TOKENS, 2)
    mean_tokens = sum(len(b) * (lengths[b].max() + 2) for b in sampler) / len(sampler)
    assert mean_tokens > 0.9 * MAX_TOKENS  # packing fills the budget
    useful = (lengths + 2).sum() / sum(len(b) * (lengths[b].max() + 2) for b in sampler)
    assert useful > 0.9  # sorting keeps padding small (random order packs ~0.41 here)


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4, 7])
def test_every_record_exactly_once_and_equal_steps(lengths, num_replicas):
    per_rank = all_rank_batches(lengths, num_replicas, epoch=3, seed=5)
    assert len({len(r) for r in per_rank}) == 1
    flat = [i for rank in per_rank for batch in rank for i in batch]
    assert sorted(flat) == list(range(lengths.size))
    for batch in (b for rank in per_rank for b in rank):
        assert len(batch) * (lengths[batch].max() + 2) <= MAX_TOKENS
        assert len(batch) >= 1


def test_drop_last_never_duplicates(lengths):
    per_rank = all_rank_batches(lengths, 4, epoch=1, drop_last=True)
    total = TokenBudgetBatchSampler(lengths, MAX_TOKENS, drop_last=True)
    assert len({len(r) for r in per_rank}) == 1
    assert len(per_rank[0]) == len(total) // 4
    flat = [i for rank in per_rank for batch in rank for i in batch]
    assert len(flat) == len(set(flat))
    dropped = total.epoch_batches(1)[4 * len(per_rank[0]) :]
    assert sorted(flat + [i for b in dropped for i in b]) == list(range(lengths.size))


def test_tiny_split_pads_by_repeating(lengths):
    tiny = lengths[:3]
    per_rank = all_rank_batches(tiny, 4)
    assert [len(r) for r in per_rank] == [1, 1, 1, 1]
    sampler = TokenBudgetBatchSampler(tiny, MAX_TOKENS, num_replicas=4, rank=0)
    assert sampler.num_padding_batches == 1
    counts = Counter(i for rank in per_rank for b in rank for i in b)
    assert set(counts) == {0, 1, 2} and sum(counts.values()) == 4


def test_determinism_across_seed_and_epoch(lengths):
    a = TokenBudgetBatchSampler(lengths, MAX_TOKENS, seed=1)
    b = TokenBudgetBatchSampler(lengths, MAX_TOKENS, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    assert first == list(b)
    b.set_epoch(3)
    later = list(b)
    assert later != first
    assert len(later) == len(first)  # sizes are epoch-invariant
    assert sorted(map(sorted, later)) != sorted(map(sorted, first))  # composition changes too
    other_seed = TokenBudgetBatchSampler(lengths, MAX_TOKENS, seed=2)
    other_seed.set_epoch(2)
    assert list(other_seed) != first


def test_resume_yields_exactly_the_remaining_batches(lengths):
    sampler = TokenBudgetBatchSampler(lengths, MAX_TOKENS, seed=9, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(5)]
    assert taken == full[:5]
    state = sampler.state_dict()
    assert state == {"epoch": 4, "seed": 9, "consumed": 5}

    resumed = TokenBudgetBatchSampler(lengths, MAX_TOKENS, num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # Lightning re-announces the same epoch; the position must survive
    assert list(resumed) == full[5:]
    assert list(resumed) == full  # the next pass over the same epoch is whole again
    resumed.set_epoch(5)
    sampler.set_epoch(5)
    assert list(resumed) == list(sampler)

    explicit = TokenBudgetBatchSampler(lengths, MAX_TOKENS, num_replicas=2, rank=1)
    explicit.load_state_dict(sampler.state_dict(consumed=3) | {"epoch": 4})
    assert list(explicit) == full[3:]


def test_max_batch_size_and_too_long_records(lengths):
    capped = TokenBudgetBatchSampler(lengths, MAX_TOKENS, max_batch_size=8, shuffle=False)
    batches = list(capped)
    assert max(len(b) for b in batches) == 8
    assert sorted(i for b in batches for i in b) == list(range(lengths.size))
    with pytest.raises(ValueError, match="crop sequences to at most 998"):
        TokenBudgetBatchSampler(lengths, 1000)
    with pytest.raises(ValueError, match="rank"):
        TokenBudgetBatchSampler(lengths, MAX_TOKENS, num_replicas=2, rank=2)
    assert list(TokenBudgetBatchSampler(np.zeros(0, dtype=np.int64), MAX_TOKENS)) == []
