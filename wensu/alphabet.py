"""Protein vocabulary: ESM-2's 33 tokens in ESM-2's order, so ESM-2 weights load unchanged.

Encoding is a numpy lookup table over ASCII bytes, so whole sequences encode without a
per-character Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SPECIAL_PREPEND = ("<cls>", "<pad>", "<eos>", "<unk>")
RESIDUES = tuple("LAGVSERTIDPNQKFYMHWC")
EXTRA_SYMBOLS = tuple("XBUZO.-")
SPECIAL_APPEND = ("<null_1>", "<mask>")
TOKENS: tuple[str, ...] = SPECIAL_PREPEND + RESIDUES + EXTRA_SYMBOLS + SPECIAL_APPEND

_INVALID = -1


class InvalidSequenceError(ValueError):
    """A sequence holds characters outside the alphabet."""

    def __init__(self, bad_chars: str, position: int):
        self.bad_chars = bad_chars
        self.position = position
        super().__init__(
            f"characters outside the protein alphabet: {bad_chars!r} (first at position {position})"
        )


class Alphabet:
    """ESM-2-compatible protein alphabet with vectorised encode/decode."""

    def __init__(self, tokens: Sequence[str] = TOKENS):
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.cls_idx = self.index["<cls>"]
        self.padding_idx = self.index["<pad>"]
        self.eos_idx = self.index["<eos>"]
        self.unk_idx = self.index["<unk>"]
        self.mask_idx = self.index["<mask>"]
        self.residue_indices = np.array([self.index[r] for r in RESIDUES], dtype=np.int64)
        self.special_indices = np.array(
            [self.index[t] for t in SPECIAL_PREPEND + SPECIAL_APPEND], dtype=np.int64
        )
        lut = np.full(256, _INVALID, dtype=np.int16)
        for tok, idx in self.index.items():
            if len(tok) == 1:
                lut[ord(tok)] = idx
                lut[ord(tok.lower())] = idx
        self._lut = lut
        decode = np.zeros(len(self.tokens), dtype=np.uint8)
        for tok, idx in self.index.items():
            decode[idx] = ord(tok) if len(tok) == 1 else ord("?")
        self._decode_lut = decode

    def __len__(self) -> int:
        return len(self.tokens)

    def valid_mask(self, residues: np.ndarray) -> np.ndarray:
        """Boolean mask over uint8 ASCII residues: True where the byte is a residue symbol."""
        return self._lut[residues] != _INVALID

    def encode_bytes(self, residues: np.ndarray) -> np.ndarray:
        """Encode a uint8 ASCII array (upper or lower case) to int64 token ids, no specials."""
        ids = self._lut[np.asarray(residues, dtype=np.uint8)]
        bad = np.flatnonzero(ids == _INVALID)
        if bad.size:
            chars = bytes(sorted(set(np.asarray(residues)[bad].tolist())))
            raise InvalidSequenceError(chars.decode("latin-1"), int(bad[0]))
        return ids.astype(np.int64)

    def encode(self, sequence: str, add_special: bool = True) -> np.ndarray:
        """Encode one sequence; with ``add_special`` it is wrapped as ``<cls> ... <eos>``."""
        try:
            raw = np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError as err:
            raise InvalidSequenceError(sequence[err.start : err.end], err.start) from None
        ids = self.encode_bytes(raw)
        if add_special:
            ids = np.concatenate(([self.cls_idx], ids, [self.eos_idx]))
        return ids

    def decode(self, ids: Iterable[int] | np.ndarray, strip_special: bool = True) -> str:
        """Decode token ids to a residue string; special tokens are dropped (or rendered)."""
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if strip_special:
            arr = arr[~np.isin(arr, self.special_indices)]
            return self._decode_lut[arr].tobytes().decode("ascii")
        return "".join(self.tokens[i] for i in arr.tolist())

    def batch_encode(self, sequences: Sequence[str], add_special: bool = True) -> np.ndarray:
        """Encode and right-pad a batch with ``<pad>`` to the longest sequence."""
        encoded = [self.encode(s, add_special) for s in sequences]
        width = max((len(e) for e in encoded), default=0)
        out = np.full((len(encoded), width), self.padding_idx, dtype=np.int64)
        for row, e in enumerate(encoded):
            out[row, : len(e)] = e
        return out


_DEFAULT: Alphabet | None = None


def get_alphabet() -> Alphabet:
    """The shared default (ESM-2) alphabet."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Alphabet()
    return _DEFAULT
