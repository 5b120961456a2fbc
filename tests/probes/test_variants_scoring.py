"""wensu.probes.variants.probe: zero-shot scores against explicit forward passes of a tiny
encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.model import Encoder, EncoderConfig
from wensu.probes.variants.data import VariantDataError, load_variant_sets
from wensu.probes.variants.probe import (
    centred_window,
    score_landscape,
    score_variants,
    tile_starts,
)

ALPHABET = get_alphabet()
SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ"  # 66 aa
TINY = dict(num_layers=2, d_model=32, num_heads=4, ffn_dim=64)


def _encoder(seed: int = 0, **overrides) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(EncoderConfig(**{**TINY, **overrides})).eval()


@pytest.fixture(scope="module")
def model() -> Encoder:
    return _encoder()


def _log_probs(model: Encoder, residues: str, column: int | None) -> torch.Tensor:
    """Explicit pass over <cls> residues <eos>; log-softmax at token `column` (masked if given)."""
    tokens = torch.from_numpy(ALPHABET.encode(residues))[None].clone()
    return _log_probs_at(model, tokens, column, masked=True)


def _log_probs_at(model, tokens, column, masked):
    if masked:
        tokens[0, column] = ALPHABET.mask_idx
    with torch.no_grad():
        logits = model(tokens)["logits"][0, column]
    return torch.log_softmax(logits.double(), -1)


def _log_odds(log_probs: torch.Tensor, wild_type: str, mutant: str) -> float:
    return float(log_probs[ALPHABET.index[mutant]] - log_probs[ALPHABET.index[wild_type]])


def _masked_marginal(model, sequence, index, wild_type, mutant, start=0, end=None):
    """Masked marginal of 0-based `index` computed on the crop sequence[start:end]."""
    crop = sequence[start:end]
    return _log_odds(_log_probs(model, crop, index - start + 1), wild_type, mutant)


def test_masked_marginal_equals_explicit_masked_pass(model):
    mutants = ["K2A", "T3W", "E25P", "Q66L"]
    expected = [
        _masked_marginal(model, SEQUENCE, 1, "K", "A"),
        _masked_marginal(model, SEQUENCE, 2, "T", "W"),
        _masked_marginal(model, SEQUENCE, 24, "E", "P"),
        _masked_marginal(model, SEQUENCE, 65, "Q", "L"),
    ]
    scores = score_variants(model, ALPHABET, SEQUENCE, mutants)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_offset_shifts_positions(model):
    shifted = score_variants(model, ALPHABET, SEQUENCE, ["K101A", "E124P"], offset=100)
    plain = score_variants(model, ALPHABET, SEQUENCE, ["K2A", "E25P"])
    np.testing.assert_array_equal(shifted, plain)


def test_batching_over_positions_matches_one_at_a_time(model):
    mutants = [f"{SEQUENCE[i]}{i + 1}{'A' if SEQUENCE[i] != 'A' else 'G'}" for i in range(0, 66, 6)]
    batched = score_variants(model, ALPHABET, SEQUENCE, mutants, batch_tokens=100_000)
    one_row_per_pass = score_variants(model, ALPHABET, SEQUENCE, mutants, batch_tokens=1)
    np.testing.assert_allclose(batched, one_row_per_pass, atol=1e-6)


def test_batching_is_independent_of_moe_capacity():
    moe = _encoder(ffn="moe", moe_num_experts=4, moe_top_k=1, moe_capacity_factor=0.5)
    mutants = ["K2A", "T3W", "E25P", "G28L", "Q66L"]
    batched = score_variants(moe, ALPHABET, SEQUENCE, mutants, batch_tokens=100_000)
    single = score_variants(moe, ALPHABET, SEQUENCE, mutants, batch_tokens=1)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert moe.layers[0].ffn.capacity_factor == 0.5  # restored


def test_multi_mutant_is_sum_of_singles(model):
    singles = score_variants(model, ALPHABET, SEQUENCE, ["K2A", "E25P", "Q66L"])
    double, triple = score_variants(model, ALPHABET, SEQUENCE, ["K2A:E25P", "K2A:E25P:Q66L"])
    assert double == pytest.approx(singles[:2].sum(), abs=1e-9)
    assert triple == pytest.approx(singles.sum(), abs=1e-9)


def test_wt_marginal_equals_explicit_unmasked_pass(model):
    tokens = torch.from_numpy(ALPHABET.encode(SEQUENCE))[None]
    expected = [
        _log_odds(_log_probs_at(model, tokens.clone(), 2, masked=False), "K", "A")
        + _log_odds(_log_probs_at(model, tokens.clone(), 25, masked=False), "E", "P"),
        _log_odds(_log_probs_at(model, tokens.clone(), 3, masked=False), "T", "W"),
    ]
    scores = score_variants(model, ALPHABET, SEQUENCE, ["K2A:E25P", "T3W"], method="wt_marginal")
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_pll_difference_equals_explicit_pseudo_log_likelihoods(model):
    sequence = SEQUENCE[:12]

    def pll(residues: str) -> float:
        return sum(
            float(_log_probs(model, residues, i + 1)[ALPHABET.index[residues[i]]])
            for i in range(len(residues))
        )

    mutant = sequence[:4] + "W" + sequence[5:]
    expected = pll(mutant) - pll(sequence)
    (score,) = score_variants(model, ALPHABET, sequence, [f"{sequence[4]}5W"], method="pll")
    assert score == pytest.approx(expected, abs=1e-4)


def test_centred_window_and_tiles_by_hand():
    assert centred_window(3, 100, 20) == (0, 20)  # clamped at the start
    assert centred_window(50, 100, 20) == (40, 60)  # centred
    assert centred_window(97, 100, 20) == (80, 100)  # clamped at the end
    assert centred_window(97, 50, 100) == (0, 50)  # window covers the sequence
    assert tile_starts(100, 40) == [0, 20, 40, 60]
    assert tile_starts(30, 40) == [0]


def test_window_covering_sequence_equals_full_path(model):
    mutants = ["K2A", "E25P", "Q66L", "K2L:Q66W"]
    for method in ("masked_marginal", "wt_marginal"):
        full = score_variants(model, ALPHABET, SEQUENCE, mutants, method=method)
        for window in (len(SEQUENCE), len(SEQUENCE) + 50):
            covered = score_variants(
                model, ALPHABET, SEQUENCE, mutants, method=method, window=window
            )
            np.testing.assert_array_equal(covered, full)


def test_window_path_scores_each_position_in_its_centred_crop(model):
    window = 20
    scores = score_variants(model, ALPHABET, SEQUENCE, ["K2A", "E25P", "Q66L"], window=window)
    expected = [
        _masked_marginal(model, SEQUENCE, 1, "K", "A", *centred_window(1, 66, window)),
        _masked_marginal(model, SEQUENCE, 24, "E", "P", *centred_window(24, 66, window)),
        _masked_marginal(model, SEQUENCE, 65, "Q", "L", *centred_window(65, 66, window)),
    ]
    assert centred_window(24, 66, window) == (14, 34)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_wt_marginal_window_path_reads_the_nearest_tile(model):
    window = 20
    (score,) = score_variants(
        model, ALPHABET, SEQUENCE, ["E25P"], window=window, method="wt_marginal"
    )
    # Tiles start at 0, 10, 20, 30, 40, 46 (centres start + 9.5); 0-based position 24 is
    # nearest the centre 19.5 of the tile [10, 30).
    assert tile_starts(66, window) == [0, 10, 20, 30, 40, 46]
    tokens = torch.from_numpy(ALPHABET.encode(SEQUENCE[10:30]))[None]
    expected = _log_odds(_log_probs_at(model, tokens, 24 - 10 + 1, masked=False), "E", "P")
    assert score == pytest.approx(expected, abs=1e-5)


def test_landscape_matches_single_mutant_scores(model):
    landscape = score_landscape(model, ALPHABET, SEQUENCE, [2, 25])
    scores = score_variants(model, ALPHABET, SEQUENCE, ["K2A", "K2W", "E25P", "E25E"])
    order = "ACDEFGHIKLMNPQRSTVWY"
    expected = [landscape[0, order.index("A")], landscape[0, order.index("W")]]
    expected += [landscape[1, order.index("P")], landscape[1, order.index("E")]]
    np.testing.assert_allclose(scores, expected, atol=1e-9)
    assert landscape[0, order.index("K")] == 0.0


@pytest.fixture(scope="module")
def long_sets():
    require_shared("variants/sets.csv")
    sets = load_variant_sets(
        require_shared("variants"),
        ["UBE4B_MOUSE_Starita_2013", "BRCA1_HUMAN_Findlay_2018"],
        max_variants=3,
    )
    assert [len(s.info.sequence) for s in sets] == [1173, 1863]
    return sets


def test_long_proteins_centred_window_path(model, long_sets):
    for variant_set in long_sets:
        info, length = variant_set.info, len(variant_set.info.sequence)
        scores = score_variants(model, ALPHABET, info.sequence, variant_set.mutants, window=1022)
        (s,) = variant_set.mutants[0]
        index = s.position - info.offset
        start, end = centred_window(index, length, 1022)
        assert end - start == 1022 and start <= index < end
        expected = _masked_marginal(model, info.sequence, index, s.wild_type, s.mutant, start, end)
        assert scores[0] == pytest.approx(expected, abs=1e-5)
        assert np.isfinite(scores).all() and len(scores) == 3


def test_long_proteins_long_context_path(long_sets):
    attention = {"backend": "chunked", "window": 16, "num_global": 1, "block_size": 64}
    windowed = _encoder(seed=1, num_layers=1, attention=attention)
    reference = _encoder(seed=1, num_layers=1, attention={**attention, "backend": "dense"})
    for variant_set in long_sets:
        info = variant_set.info
        auto = score_variants(windowed, ALPHABET, info.sequence, variant_set.mutants)
        forced = score_variants(
            windowed, ALPHABET, info.sequence, variant_set.mutants, long_context=True
        )
        np.testing.assert_array_equal(auto, forced)  # windowed models default to the whole sequence
        (s,) = variant_set.mutants[0]
        index = s.position - info.offset
        # Explicit pass over all 1,000+ residues with the dense backend and the same pattern.
        expected = _masked_marginal(reference, info.sequence, index, s.wild_type, s.mutant)
        assert auto[0] == pytest.approx(expected, abs=1e-4)


def test_wild_type_mismatch_names_source_row_and_position(model):
    with pytest.raises(VariantDataError, match=r"set demo row 2.*position 3.*says A.*has T"):
        score_variants(model, ALPHABET, SEQUENCE, ["K2A", "A3G"], source="set demo")
    with pytest.raises(VariantDataError, match=r"row 1: position 67 .*outside"):
        score_variants(model, ALPHABET, SEQUENCE, ["Q67A"])


def test_malformed_mutant_names_the_row(model):
    with pytest.raises(VariantDataError, match=r"row 2: malformed mutant 'K2'"):
        score_variants(model, ALPHABET, SEQUENCE, ["K2A", "K2"])
    with pytest.raises(VariantDataError, match=r"row 1: .*residue '\*'"):
        score_variants(model, ALPHABET, SEQUENCE, ["K2*"])
    with pytest.raises(ValueError, match="method must be one of"):
        score_variants(model, ALPHABET, SEQUENCE, ["K2A"], method="esm1v")
