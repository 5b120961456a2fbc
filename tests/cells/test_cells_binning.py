"""Normalisation and expression bins against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse
from wensu.preprocessing.cells.binning import (
    HIST_BINS,
    BinningConfig,
    add_to_histogram,
    expression_bins,
    medians_from_histogram,
    normalise_total,
    tokenize_cells,
)


def test_normalise_total_scales_rows_and_keeps_empty_rows():
    counts = sparse.csr_matrix(np.array([[1, 2, 5, 992], [0, 0, 0, 0], [3, 0, 1, 0]]))
    out = normalise_total(counts, 1e4)
    np.testing.assert_allclose(out.toarray()[0], [10, 20, 50, 9920])
    np.testing.assert_allclose(out.toarray()[1], 0)
    np.testing.assert_allclose(out.toarray()[2], [7500, 0, 2500, 0])


def test_bins_match_hand_computation():
    # floor(log2(1 + x)): 10 -> 3, 20 -> 4, 50 -> 5, 9920 -> 13 (capped at 7), 0.5 -> 0
    values = np.array([10.0, 20.0, 50.0, 9920.0, 0.5, 1.0])
    assert expression_bins(values, 8).tolist() == [4, 5, 6, 8, 1, 2]
    assert expression_bins(values, 4).tolist() == [4, 4, 4, 4, 1, 2]
    assert expression_bins(values, 1).tolist() == [1] * 6
    hand = [1 + min(math.floor(math.log2(1 + v)), 7) for v in values]
    assert expression_bins(values, 8).tolist() == hand
    assert expression_bins(values, 8).dtype == np.uint8


def test_tokenize_drops_genes_outside_vocab_and_sorts_by_id():
    counts = sparse.csr_matrix(np.array([[1, 2, 5, 992, 0], [0, 4, 0, 0, 6]], dtype=float))
    token_ids = np.array([9, -1, 5, 7, 6], dtype=np.int32)
    genes, bins, truncated = tokenize_cells(counts, token_ids, BinningConfig())
    # Cell 0: CP10k over all 4 measured genes (incl. the dropped one): 10, [20], 50, 9920.
    assert genes[0].tolist() == [5, 7, 9] and bins[0].tolist() == [6, 8, 4]
    # Cell 1: 4 of 10 counts are outside the vocabulary; gene 6 has CP10k 6000 -> bin 8.
    assert genes[1].tolist() == [6] and bins[1].tolist() == [8]
    assert truncated == 0 and genes[0].dtype == np.int32


def test_include_zeros_max_genes_and_rank_order():
    # CP10k: 1000, 10, 0, 8990 -> bins 8, 4, (0), 8
    counts = sparse.csr_matrix(np.array([[100, 1, 0, 899]], dtype=float))
    token_ids = np.array([5, 6, 7, 8], dtype=np.int32)
    panel = np.array([5, 6, 7, 8])
    genes, bins, _ = tokenize_cells(
        counts, token_ids, BinningConfig(include_zeros=True), panel=panel
    )
    assert genes[0].tolist() == [5, 6, 7, 8] and bins[0].tolist() == [8, 4, 0, 8]
    limited, _, cut = tokenize_cells(counts, token_ids, BinningConfig(max_genes=2))
    assert limited[0].tolist() == [5, 8] and cut == 1  # the two most expressed, by id
    # Rank: value / median; gene 6's median is tiny so it ranks first despite 1 count.
    medians = np.array([1000.0, 0.01, 1.0, 1e5])
    ranked, ranked_bins, _ = tokenize_cells(
        counts, token_ids, BinningConfig(token_order="rank"), medians=medians
    )
    assert ranked[0].tolist() == [6, 5, 8] and ranked_bins[0].tolist() == [4, 8, 8]


def test_histogram_medians_within_a_bin():
    values = sparse.csr_matrix(np.array([[10.0, 0], [20.0, 3.0], [40.0, 0]]))
    histogram = np.zeros((2, HIST_BINS), dtype=np.int64)
    add_to_histogram(histogram, values)
    medians = medians_from_histogram(histogram)
    assert histogram.sum() == 4
    assert medians[0] == pytest.approx(20.0, rel=0.05)
    assert medians[1] == pytest.approx(3.0, rel=0.05)
    assert medians_from_histogram(np.zeros((1, HIST_BINS), dtype=np.int64)).tolist() == [1.0]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_bins"):
        BinningConfig(num_bins=0)
    with pytest.raises(ValueError, match="token_order"):
        BinningConfig(token_order="random")
