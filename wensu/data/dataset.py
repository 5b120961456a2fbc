"""Random-access reader over the HDF5 shards of one dataset split.

The manifest gives each shard's record count, so a global record index maps to (shard, local
index) without touching any file; each shard's ``offsets`` array is read once and kept, and a
record's residues are read as one slice. HDF5 handles are opened lazily and only in the process
that uses them: they are dropped from the pickled state and reopened after a fork (the pid is
checked), because h5py handles are neither picklable nor safe to share across processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from torch.utils.data import Dataset

from wensu.alphabet import Alphabet, get_alphabet
from wensu.data.shards import (
    MANIFEST_NAME,
    DatasetIntegrityError,
    ManifestError,
    read_manifest,
    sha256_file,
)

Verify = Literal["open", "lazy", "none"]
_VERIFY_MODES = ("open", "lazy", "none")
_STREAM_BLOCK_RECORDS = 4096


class ShardLookup:
    """Index -> (shard, row) lookup and checksum verification shared by the shard datasets.

    Needs ``dataset_dir``, ``_shards`` (manifest entries), ``_starts`` (first index of each
    shard) and ``_verified`` (a set); ``_item_noun`` names an item in error messages.
    """

    _item_noun = "record"

    def _locate(self, index: int) -> tuple[int, int]:
        n, i = len(self), int(index)
        i = i + n if i < 0 else i
        if not 0 <= i < n:
            noun = self._item_noun
            raise IndexError(f"{noun} index {index} out of range for {n} {noun}s")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return shard, i - int(self._starts[shard])

    def _path(self, shard: int) -> Path:
        return self.dataset_dir / self._shards[shard]["path"]

    def _verify(self, shard: int) -> None:
        if shard in self._verified:
            return
        path = self._path(shard)
        if not path.is_file():
            raise DatasetIntegrityError(f"{path}: shard listed in the manifest is missing")
        expected = self._shards[shard]["sha256"]
        actual = sha256_file(path)
        if actual != expected:
            raise DatasetIntegrityError(
                f"{path}: checksum mismatch (manifest sha256 {expected}, file sha256 {actual}); "
                "the shard is corrupted or was rewritten after the manifest"
            )
        self._verified.add(shard)


class ShardedDataset(ShardLookup, Dataset):
    """One split of a wensu dataset directory (``manifest.json`` + ``{split}/shard-*.h5``).

    ``verify`` decides when each shard's SHA-256 is checked against the manifest: ``"open"``
    hashes every shard in the constructor, ``"lazy"`` hashes a shard the first time one of its
    records (or its ids) is read in this process, ``"none"`` never hashes. Structural checks
    (file present, record count, offsets) always run when a shard is first opened. A failure
    raises :class:`DatasetIntegrityError` naming the file.

    ``ds[i]`` returns ``{"id": str, "sequence": str, "tokens": np.int64 array}`` with the tokens
    wrapped as ``<cls> ... <eos>``.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        split: str = "train",
        verify: Verify = "open",
        alphabet: Alphabet | None = None,
    ):
        if verify not in _VERIFY_MODES:
            raise ValueError(f"verify must be one of {_VERIFY_MODES}, got {verify!r}")
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.verify = verify
        self.alphabet = alphabet or get_alphabet()
        self.manifest = read_manifest(self.dataset_dir)
        self._shards = _split_shards(self.manifest, self.dataset_dir / MANIFEST_NAME, split)
        counts = np.array([s["records"] for s in self._shards], dtype=np.int64)
        self._starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self._offsets: dict[int, np.ndarray] = {}
        self._verified: set[int] = set()
        self._lengths: np.ndarray | None = None
        self._ids: list[str] | None = None
        # shard -> (file, residues dataset, ids dataset); dataset lookups cost ~20 us each.
        self._handles: dict[int, tuple[h5py.File, h5py.Dataset, h5py.Dataset]] = {}
        self._pid = os.getpid()
        if verify == "open":
            for shard in range(len(self._shards)):
                self._verify(shard)

    # ---- public API -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard, local = self._locate(index)
        offsets = self._shard_offsets(shard, check_hash=True)
        start, end = int(offsets[local]), int(offsets[local + 1])
        _, residues, ids = self._handle(shard)
        return self._record(_text(ids[local]), residues[start:end])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_records()

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Every record of the split in order, read in blocks (one slice per block)."""
        for shard in range(len(self._shards)):
            offsets = self._shard_offsets(shard, check_hash=True)
            _, residues_ds, ids_ds = self._handle(shard)
            count = len(offsets) - 1
            for block_start in range(0, count, _STREAM_BLOCK_RECORDS):
                block_end = min(block_start + _STREAM_BLOCK_RECORDS, count)
                base = int(offsets[block_start])
                residues = residues_ds[base : int(offsets[block_end])]
                ids = ids_ds[block_start:block_end]
                for j, record_id in enumerate(ids):
                    lo = int(offsets[block_start + j]) - base
                    hi = int(offsets[block_start + j + 1]) - base
                    yield self._record(_text(record_id), residues[lo:hi])

    @property
    def lengths(self) -> np.ndarray:
        """Residues per record (np.int64, no special tokens), read from the shards' offsets."""
        if self._lengths is None:
            parts = [np.diff(self._shard_offsets(s)) for s in range(len(self._shards))]
            self._lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._lengths

    @property
    def ids(self) -> list[str]:
        """Record ids in index order."""
        if self._ids is None:
            ids: list[str] = []
            for shard in range(len(self._shards)):
                self._shard_offsets(shard, check_hash=True)
                ids.extend(_text(x) for x in self._handle(shard)[2][:])
            self._ids = ids
        return self._ids

    @property
    def shard_paths(self) -> list[Path]:
        """Absolute paths of this split's shards, in manifest order."""
        return [self.dataset_dir / s["path"] for s in self._shards]

    def close(self) -> None:
        """Close the HDF5 handles this process opened (they reopen on the next read)."""
        if self._pid == os.getpid():
            for file, _, _ in self._handles.values():
                file.close()
        self._handles = {}

    # ---- pickling / fork safety -------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    # ---- internals --------------------------------------------------------------------------

    def _record(self, record_id: str, residues: np.ndarray) -> dict[str, Any]:
        body = self.alphabet.encode_bytes(residues)
        tokens = np.empty(body.size + 2, dtype=np.int64)
        tokens[0] = self.alphabet.cls_idx
        tokens[1:-1] = body
        tokens[-1] = self.alphabet.eos_idx
        return {"id": record_id, "sequence": residues.tobytes().decode("ascii"), "tokens": tokens}

    def _handle(self, shard: int) -> tuple[h5py.File, h5py.Dataset, h5py.Dataset]:
        if self._pid != os.getpid():
            # Inherited through fork: never touch the parent's handles; open our own.
            self._handles = {}
            self._pid = os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            path = self._path(shard)
            if not path.is_file():
                raise DatasetIntegrityError(f"{path}: shard listed in the manifest is missing")
            try:
                file = h5py.File(path, "r")
            except OSError as err:
                raise DatasetIntegrityError(f"{path}: not a readable HDF5 shard ({err})") from None
            missing = [k for k in ("residues", "offsets", "ids") if k not in file]
            if missing:
                file.close()
                raise DatasetIntegrityError(f"{path}: shard lacks dataset(s) {', '.join(missing)}")
            handle = (file, file["residues"], file["ids"])
            self._handles[shard] = handle
        return handle

    def _shard_offsets(self, shard: int, check_hash: bool = False) -> np.ndarray:
        if check_hash and self.verify == "lazy":
            self._verify(shard)
        offsets = self._offsets.get(shard)
        if offsets is None:
            file = self._handle(shard)[0]
            offsets = np.asarray(file["offsets"][:], dtype=np.int64)
            _check_offsets(self._path(shard), offsets, self._shards[shard], file)
            self._offsets[shard] = offsets
        return offsets


def _check_offsets(path: Path, offsets: np.ndarray, entry: dict, file: h5py.File) -> None:
    records = int(entry["records"])
    if offsets.ndim != 1 or offsets.size != records + 1:
        raise DatasetIntegrityError(
            f"{path}: offsets hold {offsets.size} entries, expected records + 1 = {records + 1}"
        )
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise DatasetIntegrityError(f"{path}: offsets must start at 0 and never decrease")
    if int(offsets[-1]) != file["residues"].shape[0] or len(file["ids"]) != records:
        raise DatasetIntegrityError(
            f"{path}: residues/ids sizes disagree with offsets "
            f"({file['residues'].shape[0]} residues, {len(file['ids'])} ids, "
            f"offsets end at {int(offsets[-1])}, manifest says {records} records)"
        )


def _split_shards(manifest: dict, manifest_path: Path, split: str) -> list[dict]:
    kind = manifest.get("kind", "proteins")
    if kind != "proteins":
        raise ManifestError(f"{manifest_path}: dataset kind is {kind!r}, not 'proteins'")
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise ManifestError(f"{manifest_path}: manifest has no 'splits' object")
    if split not in splits:
        raise ManifestError(
            f"{manifest_path}: split {split!r} not in manifest (has: {', '.join(sorted(splits))})"
        )
    shards = splits[split].get("shards") if isinstance(splits[split], dict) else None
    if not isinstance(shards, list):
        raise ManifestError(f"{manifest_path}: split {split!r} has no 'shards' list")
    for k, entry in enumerate(shards):
        ok = isinstance(entry, dict) and {"path", "records", "sha256"} <= entry.keys()
        if not ok or not isinstance(entry["records"], int) or entry["records"] < 0:
            raise ManifestError(
                f"{manifest_path}: split {split!r} shard entry {k} needs 'path', 'sha256' and a "
                f"non-negative integer 'records', got {entry!r}"
            )
    return shards


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
