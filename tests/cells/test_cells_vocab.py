"""Gene vocabulary: ids, persistence round trip, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from wensu.preprocessing.cells.vocab import SPECIAL_TOKENS, GeneVocab, VocabError


def test_special_tokens_come_first_with_pad_1():
    vocab = GeneVocab(["CD3E", "LYZ", "MS4A1"])
    assert vocab.symbols(range(5)) == list(SPECIAL_TOKENS)
    assert (vocab.cls_idx, vocab.pad_idx, vocab.mask_idx) == (0, 1, 4)
    assert len(vocab) == 8
    assert vocab.id_of("CD3E") == 5 and vocab.id_of("MS4A1") == 7
    np.testing.assert_array_equal(vocab.lookup(["MS4A1", "NOPE", "CD3E"]), [7, -1, 5])
    assert vocab.lookup(["LYZ"]).dtype == np.int32
    with pytest.raises(KeyError, match="NOPE"):
        vocab.id_of("NOPE")


def test_round_trip_keeps_ids(tmp_path):
    vocab = GeneVocab(["HLA-DRA", "RP11-34P13.7", "CD14", "ÉGENE"])
    path = vocab.save(tmp_path / "vocab.json")
    loaded = GeneVocab.load(path)
    assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    assert loaded.lookup(["CD14", "HLA-DRA"]).tolist() == [7, 5]
    data = json.loads(path.read_text())
    assert data == {
        "format_version": 1,
        "special_tokens": list(SPECIAL_TOKENS),
        "genes": list(vocab.genes),
    }
    assert not list(tmp_path.glob("*.tmp"))


def test_rejects_repeats_and_special_symbols():
    with pytest.raises(VocabError, match="repeats symbols: CD3E"):
        GeneVocab(["CD3E", "LYZ", "CD3E"])
    with pytest.raises(VocabError, match="special-token"):
        GeneVocab(["<mask>"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"genes": ["A"], "format_version": 2, "special_tokens": []}', "format_version 2"),
        ('{"genes": ["A"], "format_version": 1, "special_tokens": ["<pad>"]}', "special tokens"),
        ('["A"]', "'genes' list"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad_vocab.json"
    path.write_text(content)
    with pytest.raises(VocabError, match=message) as info:
        GeneVocab.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(VocabError, match="not found"):
        GeneVocab.load(tmp_path / "missing.json")
