"""Cell shards: one cell = (gene token ids, expression bins), with its labels.

A cell dataset directory follows the protein shard rules (``manifest.json`` with ``kind:
"cells"``, ``{split}/shard-NNNNN.h5`` listed with SHA-256, atomic writes) plus ``vocab.json``.
Each shard holds ``genes`` (int32 token ids, concatenated), ``bins`` (uint8 expression bins,
aligned with ``genes``), ``offsets`` (int64, N+1), ``ids`` and ``dataset`` (UTF-8 strings per
cell), ``donor`` (UTF-8, "" = unknown) and ``labels/<column>`` (UTF-8, "" = unlabelled); attrs
``format_version``, ``kind``, ``split``, ``source``. Bin 0 means "measured, not expressed" and
only appears when preprocessing kept zeros; expressed genes have bins >= 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from wensu.cell_vocab import GeneVocab
from wensu.data.collate import collate_tokens
from wensu.data.dataset import ShardLookup
from wensu.data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DatasetIntegrityError,
    ManifestError,
    atomic_hdf5,
    read_manifest,
    sha256_file,
)

CELLS_KIND = "cells"
LABELS_GROUP = "labels"
_REQUIRED = ("genes", "bins", "offsets", "ids", "dataset")
Verify = Literal["open", "lazy", "none"]


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def write_cell_shard(
    path: str | Path,
    *,
    ids: Sequence[str],
    datasets: Sequence[str],
    genes: Sequence[np.ndarray],
    bins: Sequence[np.ndarray],
    labels: Mapping[str, Sequence[str]],
    donors: Sequence[str],
    attrs: Mapping[str, Any] | None = None,
) -> dict:
    """Write one cell shard atomically; returns its manifest entry.

    The entry is ``{"path": "<split>/<name>", "records": n, "tokens": t, "sha256": hex}``.
    Bytes are deterministic for the same cells (no HDF5 timestamps), so reruns give the same hash.
    """
    path = Path(path)
    n = len(ids)
    for name, values in (
        ("datasets", datasets),
        ("genes", genes),
        ("bins", bins),
        ("donors", donors),
    ):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but there are {n} cell ids")
    for column, values in labels.items():
        if len(values) != n:
            raise ValueError(f"labels[{column!r}] has {len(values)} entries, expected {n}")
    lengths = np.fromiter((len(g) for g in genes), dtype=np.int64, count=n)
    if any(len(b) != len(g) for g, b in zip(genes, bins, strict=True)):
        raise ValueError(f"{path}: every cell needs as many bins as gene ids")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gene_ids = np.concatenate(genes).astype(np.int32) if n else np.zeros(0, np.int32)
    bin_values = np.concatenate(bins).astype(np.uint8) if n else np.zeros(0, np.uint8)

    file_attrs: dict[str, Any] = {"split": path.parent.name, "source": ""}
    file_attrs.update(attrs or {})
    file_attrs.update(format_version=FORMAT_VERSION, kind=CELLS_KIND)
    text = h5py.string_dtype(encoding="utf-8")
    with atomic_hdf5(path) as h5:
        h5.create_dataset("genes", data=gene_ids, track_times=False)
        h5.create_dataset("bins", data=bin_values, track_times=False)
        h5.create_dataset("offsets", data=offsets, track_times=False)
        for key, values in (("ids", ids), ("dataset", datasets), ("donor", donors)):
            h5.create_dataset(key, data=_strings(values), dtype=text, track_times=False)
        group = h5.create_group(LABELS_GROUP, track_order=False)
        for column in sorted(labels):
            group.create_dataset(
                column, data=_strings(labels[column]), dtype=text, track_times=False
            )
        for key in sorted(file_attrs):
            h5.attrs[key] = file_attrs[key]
    digest = sha256_file(path)
    return {
        "path": f"{path.parent.name}/{path.name}",
        "records": n,
        "tokens": int(gene_ids.size),
        "sha256": digest,
    }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class CellShardDataset(ShardLookup, Dataset):
    """One split of a cell dataset directory written by ``wensu.preprocessing.cells``.

    ``ds[i]`` is ``{"id", "dataset", "donor", "genes": np.int64 token ids, "bins": np.int64,
    "labels": {column: str}}`` (no special tokens; :func:`collate_cells` adds ``<cls>``).
    ``verify`` as in :class:`wensu.data.ShardedDataset`: ``"open"`` hashes every shard now,
    ``"lazy"`` on first use, ``"none"`` never. HDF5 handles open lazily per process.
    """

    _item_noun = "cell"

    def __init__(
        self, dataset_dir: str | os.PathLike, split: str = "train", verify: Verify = "open"
    ):
        if verify not in ("open", "lazy", "none"):
            raise ValueError(f"verify must be 'open', 'lazy' or 'none', got {verify!r}")
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.verify = verify
        self.manifest = read_manifest(self.dataset_dir)
        where = self.dataset_dir / MANIFEST_NAME
        if self.manifest.get("kind") != CELLS_KIND:
            raise ManifestError(
                f"{where}: dataset kind is {self.manifest.get('kind')!r}, not 'cells'"
            )
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ManifestError(f"{where}: split {split!r} not in manifest (has: {sorted(splits)})")
        self._shards: list[dict] = splits[split]["shards"]
        self.vocab = GeneVocab.load(self.dataset_dir / self.manifest.get("vocab", "vocab.json"))
        self.label_columns: list[str] = list(self.manifest.get("label_columns", []))
        counts = np.array([s["records"] for s in self._shards], dtype=np.int64)
        self._starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self._offsets: dict[int, np.ndarray] = {}
        self._verified: set[int] = set()
        self._handles: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        if verify == "open":
            for shard in range(len(self._shards)):
                self._verify(shard)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        shard, local = self._locate(index)
        h5 = self._file(shard)
        offsets = self._shard_offsets(shard)
        lo, hi = int(offsets[local]), int(offsets[local + 1])
        return {
            "id": _text(h5["ids"][local]),
            "dataset": _text(h5["dataset"][local]),
            "donor": _text(h5["donor"][local]),
            "genes": h5["genes"][lo:hi].astype(np.int64),
            "bins": h5["bins"][lo:hi].astype(np.int64),
            "labels": {c: _text(h5[LABELS_GROUP][c][local]) for c in self.label_columns},
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per cell (np.int64, no special tokens), from the shards' offsets."""
        parts = [np.diff(self._shard_offsets(s)) for s in range(len(self._shards))]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def column(self, name: str) -> np.ndarray:
        """A per-cell string column for the whole split: ``ids``, ``dataset``, ``donor`` or a
        label column name."""
        parts = []
        for shard in range(len(self._shards)):
            h5 = self._file(shard)
            key = name if name in ("ids", "dataset", "donor") else f"{LABELS_GROUP}/{name}"
            if key not in h5:
                raise KeyError(f"{self._path(shard)}: no column {name!r}")
            parts.append(np.array([_text(v) for v in h5[key][:]], dtype=object))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=object)

    def close(self) -> None:
        """Close this process's HDF5 handles (they reopen on the next read)."""
        if self._pid == os.getpid():
            for h5 in self._handles.values():
                h5.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            if self.verify == "lazy":
                self._verify(shard)
            path = self._path(shard)
            try:
                h5 = h5py.File(path, "r")
            except OSError as err:
                raise DatasetIntegrityError(
                    f"{path}: not a readable HDF5 cell shard ({err})"
                ) from None
            missing = [k for k in _REQUIRED if k not in h5]
            if missing:
                h5.close()
                raise DatasetIntegrityError(f"{path}: cell shard lacks {', '.join(missing)}")
            self._handles[shard] = h5
        return self._handles[shard]

    def _shard_offsets(self, shard: int) -> np.ndarray:
        if shard not in self._offsets:
            h5 = self._file(shard)
            offsets = np.asarray(h5["offsets"][:], dtype=np.int64)
            records = int(self._shards[shard]["records"])
            ok = (
                offsets.size == records + 1
                and offsets[0] == 0
                and not np.any(np.diff(offsets) < 0)
                and int(offsets[-1]) == h5["genes"].shape[0] == h5["bins"].shape[0]
                and len(h5["ids"]) == records
            )
            if not ok:
                raise DatasetIntegrityError(
                    f"{self._path(shard)}: offsets, genes, bins and ids disagree with each other "
                    f"or with the manifest's {records} records"
                )
            self._offsets[shard] = offsets
        return self._offsets[shard]


def collate_cells(
    cells: Sequence[Mapping[str, Any]],
    *,
    cls_idx: int = 0,
    pad_idx: int = 1,
    pad_bin: int = 0,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Batch cells as ``genes`` / ``bins`` LongTensors [B, L] with ``<cls>`` first (bin 0).

    Cells longer than ``max_tokens`` (counting ``<cls>``) keep their first ``max_tokens - 1``
    genes; padding is ``pad_idx`` in ``genes`` and ``pad_bin`` in ``bins``.
    """
    keep = None if max_tokens is None else max_tokens - 1
    genes = [np.concatenate(([cls_idx], np.asarray(c["genes"])[:keep])) for c in cells]
    bins = [np.concatenate(([pad_bin], np.asarray(c["bins"])[:keep])) for c in cells]
    return {
        "genes": collate_tokens(genes, pad_idx),
        "bins": collate_tokens(bins, pad_bin),
        "lengths": torch.tensor([len(g) for g in genes], dtype=torch.long),
        "ids": [c["id"] for c in cells],
        "labels": [c.get("labels", {}) for c in cells],
    }
