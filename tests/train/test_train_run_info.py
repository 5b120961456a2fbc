"""Run records: the unigram baseline against a direct count, git and version capture."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from train_helpers import shared_dataset

from wensu.data.dataset import ShardedDataset
from wensu.train.run_info import git_commit, package_versions, residue_counts, unigram_baseline

RESIDUE_TOKENS = "LAGVSERTIDPNQKFYMHWCXBUZO.-"


def test_unigram_baseline_matches_a_direct_count(tmp_path_factory):
    dataset = shared_dataset(tmp_path_factory)
    train = Counter("".join(r["sequence"] for r in ShardedDataset(dataset, "train")))
    valid = Counter("".join(r["sequence"] for r in ShardedDataset(dataset, "valid")))
    total = sum(train.values()) + len(RESIDUE_TOKENS)
    expected = -sum(n * math.log((train[c] + 1) / total) for c, n in valid.items()) / sum(
        valid.values()
    )
    baseline = unigram_baseline(dataset)
    assert baseline["loss"] == pytest.approx(expected, rel=1e-9)
    assert baseline["perplexity"] == pytest.approx(math.exp(expected))
    assert baseline["train_residues"] == sum(train.values())
    # Real proteins: composition alone gives a perplexity near 17-18 (of 20 residues).
    assert 15 < baseline["perplexity"] < 20


def test_residue_counts_stop_at_the_budget(tmp_path_factory):
    dataset = shared_dataset(tmp_path_factory)
    from wensu.alphabet import get_alphabet

    assert residue_counts(dataset, "train", get_alphabet(), max_residues=1000).sum() == 1000


def test_environment_capture():
    versions = package_versions()
    assert versions["torch"] and versions["lightning"] and versions["python"]
    commit = git_commit()
    assert commit is None or len(commit["commit"]) == 40
