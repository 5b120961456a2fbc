"""The gene vocabulary of cell models: gene symbols -> token ids, special tokens first.

Like :mod:`wensu.alphabet` for proteins, this is the one definition that preprocessing (which
writes ``vocab.json``), the cell datasets, the cell encoder and the probes all import.

Ids 0-4 are ``<cls> <pad> <eos> <unk> <mask>`` in that order, so ``<cls>`` = 0 and ``<pad>`` = 1
as in the protein alphabet: ``wensu.model.Encoder`` treats ``tokens == 1`` as padding, and a cell
sequence read through a gene embedding keeps that convention. Genes follow from id 5 in the
order given (the pipeline sorts symbols, so a vocabulary built from the same genes is the same
file). ``vocab.json`` is the contract between preprocessing, training and probes: reuse it
(``vocab=path``) to keep ids stable when new data is added.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from wensu.atomic import write_text_atomic

# How AnnData files name genes: Ensembl ids (version suffix optional) or symbols, the latter
# often in one of these ``var`` columns when the index holds Ensembl ids.
ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
SYMBOL_COLUMNS = (
    "gene_symbol",
    "gene_symbols",
    "symbol",
    "gene_name",
    "feature_name",
    "SYMBOL",
    "gene_short_name",
)

SPECIAL_TOKENS = ("<cls>", "<pad>", "<eos>", "<unk>", "<mask>")
CLS_IDX, PAD_IDX, EOS_IDX, UNK_IDX, MASK_IDX = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)  # genes start at this id
VOCAB_NAME = "vocab.json"
VOCAB_FORMAT = 1


class VocabError(ValueError):
    """A gene vocabulary is malformed, or its file is missing or unreadable."""


class GeneVocab:
    """Gene symbols with fixed token ids; ``lookup`` maps symbols to ids (-1 = not in it)."""

    special_tokens = SPECIAL_TOKENS
    cls_idx, pad_idx, eos_idx, unk_idx, mask_idx = CLS_IDX, PAD_IDX, EOS_IDX, UNK_IDX, MASK_IDX
    num_special = NUM_SPECIAL

    def __init__(self, genes: Iterable[str]):
        self.genes: tuple[str, ...] = tuple(str(g) for g in genes)
        seen: set[str] = set()
        repeated = sorted({g for g in self.genes if g in seen or seen.add(g)})
        if repeated:
            raise VocabError(f"gene vocabulary repeats symbols: {', '.join(repeated[:10])}")
        bad = [g for g in self.genes if not g or g in SPECIAL_TOKENS]
        if bad:
            raise VocabError(f"gene vocabulary holds empty or special-token symbols: {bad[:10]}")
        self._ids = {g: i + self.num_special for i, g in enumerate(self.genes)}

    def __len__(self) -> int:
        return self.num_special + len(self.genes)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocab) and self.genes == other.genes

    def __hash__(self) -> int:
        return hash(self.genes)

    def id_of(self, symbol: str) -> int:
        """Token id of a gene symbol; a :class:`KeyError` names the symbol when it is absent."""
        try:
            return self._ids[symbol]
        except KeyError:
            raise KeyError(f"gene {symbol!r} is not in the vocabulary") from None

    def lookup(self, symbols: Sequence[str]) -> np.ndarray:
        """int32 token ids of ``symbols``, -1 where a symbol is not in the vocabulary."""
        return np.fromiter(
            (self._ids.get(s, -1) for s in symbols), dtype=np.int32, count=len(symbols)
        )

    def symbols(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Symbols (or special tokens) of token ids."""
        names = SPECIAL_TOKENS + self.genes
        return [names[int(i)] for i in ids]

    def to_dict(self) -> dict:
        return {
            "format_version": VOCAB_FORMAT,
            "special_tokens": list(SPECIAL_TOKENS),
            "genes": list(self.genes),
        }

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal vocabularies have equal fingerprints."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (atomic: temporary file, fsync, rename)."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> GeneVocab:
        """Read a vocabulary written by :meth:`save`; problems raise :class:`VocabError`."""
        path = Path(path)
        if not path.is_file():
            raise VocabError(f"{path}: gene vocabulary file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VocabError(f"{path}: gene vocabulary is not valid JSON ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("genes"), list):
            raise VocabError(f"{path}: gene vocabulary needs a JSON object with a 'genes' list")
        if data.get("format_version") != VOCAB_FORMAT:
            raise VocabError(
                f"{path}: vocabulary format_version {data.get('format_version')!r} is not "
                f"supported (expected {VOCAB_FORMAT})"
            )
        if data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise VocabError(
                f"{path}: special tokens {data.get('special_tokens')!r} differ from "
                f"{list(SPECIAL_TOKENS)}; ids would not match"
            )
        try:
            return cls(data["genes"])
        except VocabError as err:
            raise VocabError(f"{path}: {err}") from None
