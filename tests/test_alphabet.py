import numpy as np
import pytest

from wensu.alphabet import TOKENS, Alphabet, InvalidSequenceError, get_alphabet

# fair-esm's esm/constants.py proteinseq_toks plus the ESM-2 specials, in ESM-2's order.
ESM2_ORDER = [
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "N", "Q", "K", "F", "Y",
    "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
]  # fmt: skip


def test_tokens_match_esm2_order():
    assert list(TOKENS) == ESM2_ORDER
    a = get_alphabet()
    assert len(a) == 33
    assert (a.cls_idx, a.padding_idx, a.eos_idx, a.unk_idx, a.mask_idx) == (0, 1, 2, 3, 32)


def test_encode_matches_dictionary_lookup_and_roundtrips():
    a = Alphabet()
    seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQXBUZO"
    expected = [0] + [ESM2_ORDER.index(c) for c in seq] + [2]
    assert a.encode(seq).tolist() == expected
    assert a.decode(a.encode(seq)) == seq
    assert a.encode(seq.lower()).tolist() == expected


def test_invalid_characters_are_an_error_not_unk():
    a = Alphabet()
    with pytest.raises(InvalidSequenceError) as err:
        a.encode("MKT*AJ")
    assert err.value.position == 3
    assert err.value.bad_chars == "*J"
    with pytest.raises(InvalidSequenceError):
        a.encode("MKTé")


def test_valid_mask_and_batch_encode():
    a = Alphabet()
    raw = np.frombuffer(b"MK1a*", dtype=np.uint8)
    assert a.valid_mask(raw).tolist() == [True, True, False, True, False]
    batch = a.batch_encode(["MK", "MKTA"])
    assert batch.tolist() == [
        [0, 20, 17, 2, 1, 1],
        [0, 20, 17, 11, 5, 2],
    ]
