"""On-disk parts: the parsed records of one byte range, as memory-mappable ``.npy`` columns.

A part is a directory ``parts/u<unit>-p<part>/`` holding one ``.npy`` file per column and
``meta.json`` (counts, byte range, rejected records, file sizes). It is written under a
``.partial`` name and renamed into place, so a part directory that exists is complete; a
rerun checks the sizes in ``meta.json`` before trusting it.

Besides the records, a part carries two sorted key tables for the out-of-core deduplication
(:mod:`preprocessing.decide`): ``dkeys`` (sequence digest) and ``ikeys`` (hash of the id), each
an ``(n, 3)`` uint64 array of (high 64 bits, low 64 bits, record index) sorted by hash then
index, plus ``dbuckets``/``ikeys``' ``ibuckets``: where each of the :data:`BUCKETS` hash
prefixes starts. A partition of the hash space is a range of buckets, so a partition task reads
one contiguous slice of every part's table and never the whole table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

PART_DIR = "parts"
BUCKET_BITS = 12
BUCKETS = 1 << BUCKET_BITS
KEY_COLUMNS = 3  # high, low, record index
_PARTIAL = ".partial"


def part_dir(work_dir: Path, unit: int, part: int) -> Path:
    return Path(work_dir) / PART_DIR / f"u{unit:06d}-p{part:05d}"


def digest_words(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    """16-byte digests -> (high, low) uint64 words whose order is the digests' byte order."""
    words = np.frombuffer(digests, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


def key_table(digests: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The sorted ``(n, 3)`` key table of 16-byte ``digests`` and its bucket starts."""
    high, low = digest_words(digests)
    order = np.lexsort((low, high))  # stable: equal keys stay in record order
    table = np.empty((order.size, KEY_COLUMNS), dtype=np.uint64)
    table[:, 0], table[:, 1], table[:, 2] = high[order], low[order], order
    starts = np.searchsorted(
        table[:, 0] >> np.uint64(64 - BUCKET_BITS), np.arange(BUCKETS + 1, dtype=np.uint64)
    ).astype(np.int64)
    return table, starts


def id_digests(ids: list[str]) -> bytes:
    """BLAKE2b-128 of each id's UTF-8 bytes, joined (ids are compared by this digest)."""
    blake2b = hashlib.blake2b
    return b"".join([blake2b(i.encode(), digest_size=16).digest() for i in ids])


def write_part(directory: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write the columns and ``meta.json`` under a temporary name, then rename into place."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + _PARTIAL)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sizes = {}
    for name, array in arrays.items():
        path = tmp / f"{name}.npy"
        np.save(path, np.ascontiguousarray(array), allow_pickle=False)
        sizes[name] = path.stat().st_size
    (tmp / "meta.json").write_text(json.dumps(dict(meta, files=sizes)), encoding="utf-8")
    # No fsync: a part only caches work; a part damaged by a power cut fails its size check
    # and its unit is parsed again.
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def remove_partials(work_dir: Path) -> None:
    """Drop part directories a killed run left half written."""
    for stale in (Path(work_dir) / PART_DIR).glob("*" + _PARTIAL):
        shutil.rmtree(stale, ignore_errors=True)


class PartReader:
    """Columns of a written part, memory-mapped on first use (only touched pages are read)."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text(encoding="utf-8"))
        self._cache: dict[str, np.ndarray] = {}

    @property
    def valid(self) -> int:
        return int(self.meta["valid"])

    def intact(self) -> bool:
        """Every column file is there with the size written."""
        for name, size in self.meta.get("files", {}).items():
            path = self.directory / f"{name}.npy"
            if not path.exists() or path.stat().st_size != size:
                return False
        return "files" in self.meta

    def column(self, name: str) -> np.ndarray:
        if name not in self._cache:
            path = self.directory / f"{name}.npy"
            # Empty arrays cannot be memory-mapped.
            mode = "r" if path.stat().st_size > 256 else None
            self._cache[name] = np.load(path, mmap_mode=mode, allow_pickle=False)
        return self._cache[name]

    def keys(self, kind: str, first_bucket: int, end_bucket: int) -> np.ndarray:
        """Rows of the ``kind`` ("d" or "i") key table in buckets ``[first, end)``."""
        starts = self.column(f"{kind}buckets")
        table = self.column(f"{kind}keys")
        return np.asarray(table[int(starts[first_bucket]) : int(starts[end_bucket])])

    def ids_at(self, indices: np.ndarray) -> list[str]:
        """Ids of the records at ``indices``."""
        # Ids are joined with "\n"; offsets[i] is where id i starts (offsets[n] = len + 1).
        blob, offsets = self.column("id_blob"), self.column("id_offsets")
        indices = np.asarray(indices, dtype=np.int64)
        starts, ends = offsets[indices].tolist(), (offsets[indices + 1] - 1).tolist()
        return [blob[s:e].tobytes().decode() for s, e in zip(starts, ends, strict=True)]

    def all_ids(self) -> list[str]:
        text = np.asarray(self.column("id_blob")).tobytes().decode()
        return text.split("\n") if self.valid else []

    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.column("seq_offsets")))

    def sequences_at(self, indices: list[int]) -> list[bytes]:
        residues, offsets = self.column("residues"), self.column("seq_offsets")
        return [residues[offsets[i] : offsets[i + 1]].tobytes() for i in indices]
