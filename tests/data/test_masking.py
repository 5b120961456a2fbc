"""mask_tokens on a real padded UniParc batch: exact invariants and 80/10/10 statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from wensu.alphabet import get_alphabet
from wensu.data.collate import collate_tokens
from wensu.data.masking import IGNORE_INDEX, mask_tokens

UNIPARC = "sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta"


def fasta_sequences(path: Path) -> list[str]:
    seqs: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            seqs.append([])
        elif line.strip():
            seqs[-1].append(line.strip())
    return ["".join(s) for s in seqs]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    alphabet = get_alphabet()
    seqs = fasta_sequences(require_shared(UNIPARC))
    return collate_tokens([alphabet.encode(s[:1000]) for s in seqs])


def test_invariants_and_statistics(batch):
    alphabet = get_alphabet()
    original = batch.clone()
    inputs, labels = mask_tokens(
        batch, alphabet, mask_prob=0.15, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(batch, original)  # input untouched
    specials = torch.as_tensor(alphabet.special_indices)
    eligible = ~torch.isin(batch, specials)
    selected = labels != IGNORE_INDEX

    assert not torch.any(selected & ~eligible)  # <cls>/<eos>/<pad> never selected
    assert torch.equal(labels[selected], batch[selected])
    assert torch.equal(inputs[~selected], batch[~selected])
    assert torch.all(inputs[~eligible] == batch[~eligible])

    n_eligible = int(eligible.sum())
    n_selected = int(selected.sum())
    assert n_eligible > 150_000
    assert abs(n_selected / n_eligible - 0.15) < 0.005  # sd ~ 0.0009

    masked = selected & (inputs == alphabet.mask_idx)
    changed = selected & (inputs != alphabet.mask_idx) & (inputs != batch)
    kept = selected & (inputs == batch)
    assert int((masked | changed | kept).sum()) == n_selected
    standard = torch.isin(batch, torch.as_tensor(alphabet.residue_indices))
    # A random replacement hits the original residue with probability 1/20.
    p_same = 0.1 * float((standard & selected).sum()) / n_selected / 20
    assert abs(int(masked.sum()) / n_selected - 0.8) < 0.01
    assert abs(int(changed.sum()) / n_selected - (0.1 - p_same)) < 0.01
    assert abs(int(kept.sum()) / n_selected - (0.1 + p_same)) < 0.01

    replacements = inputs[changed]
    residue_ids = alphabet.residue_indices.tolist()
    assert set(replacements.tolist()) == set(residue_ids)  # only the 20 standard residues
    counts = np.bincount(replacements.numpy(), minlength=len(alphabet))[residue_ids]
    expected = replacements.numel() / 20
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 43.82  # uniform over 20 residues: 99.9% quantile of chi2 with 19 dof


def test_matches_elementwise_reference_for_same_draws():
    alphabet = get_alphabet()
    tokens = collate_tokens([alphabet.encode(s) for s in ("MKTAYIAKQRQISFVKSHFSRQ", "GXLLV")])
    inputs, labels = mask_tokens(
        tokens, alphabet, mask_prob=0.4, generator=torch.Generator().manual_seed(7)
    )
    gen = torch.Generator().manual_seed(7)
    select_draw = torch.rand(tokens.shape, generator=gen)
    action_draw = torch.rand(tokens.shape, generator=gen)
    pick = torch.randint(20, tokens.shape, generator=gen)
    specials = set(alphabet.special_indices.tolist())
    for (b, t), token in np.ndenumerate(tokens.numpy()):
        selected = token not in specials and select_draw[b, t] < 0.4
        if not selected:
            want_input, want_label = token, IGNORE_INDEX
        elif action_draw[b, t] < 0.8:
            want_input, want_label = alphabet.mask_idx, token
        elif action_draw[b, t] < 0.9:
            want_input, want_label = int(alphabet.residue_indices[pick[b, t]]), token
        else:
            want_input, want_label = token, token
        assert (int(inputs[b, t]), int(labels[b, t])) == (want_input, want_label)
    assert int((labels != IGNORE_INDEX).sum()) > 5


def test_reproducible_and_extreme_probabilities(batch):
    alphabet = get_alphabet()
    small = batch[:8]
    a = mask_tokens(small, alphabet, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(small, alphabet, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(small, alphabet, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])

    inputs, labels = mask_tokens(small, alphabet, mask_prob=0.0)
    assert torch.equal(inputs, small) and torch.all(labels == IGNORE_INDEX)
    eligible = ~torch.isin(small, torch.as_tensor(alphabet.special_indices))
    _, labels = mask_tokens(small, alphabet, mask_prob=1.0)
    assert torch.equal(labels != IGNORE_INDEX, eligible)

    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(small, alphabet, mask_prob=1.5)
    with pytest.raises(ValueError, match="LongTensor"):
        mask_tokens(small.int(), alphabet)
