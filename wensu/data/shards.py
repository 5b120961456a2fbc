"""HDF5 protein shards and the dataset manifest: the on-disk format every stream shares.

A shard ``{split}/shard-NNNNN.h5`` holds ``residues`` (uint8 upper-case ASCII, concatenated),
``offsets`` (int64, N+1, ``offsets[0] == 0``), ``ids`` (UTF-8 strings) and optionally
``cluster`` (UTF-8 strings) and ``taxon`` (int64, -1 = unknown). Every file here is written
atomically (temporary name, fsync, ``os.replace``) so a killed writer never leaves a half file
under the final name, and shard bytes are deterministic for the same input (no HDF5 timestamps),
so reruns reproduce the same SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wensu.atomic import fsync_dir as fsync_dir  # re-exported
from wensu.atomic import write_text_atomic as write_text_atomic  # re-exported

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
MANIFEST_NAME = "manifest.json"

_HASH_BLOCK = 1 << 20


class DatasetIntegrityError(ValueError):
    """A dataset directory is incomplete or corrupted: missing file, wrong hash, bad layout."""


class ManifestError(DatasetIntegrityError):
    """The dataset manifest is missing, unreadable or malformed."""


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard_name(3) == "shard-00003.h5"``."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"shard-{index:05d}.h5"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_bytes(sequence: bytes | str, record_id: str) -> bytes:
    raw = sequence.encode("ascii") if isinstance(sequence, str) else bytes(sequence)
    if raw != raw.upper():
        raise ValueError(f"record {record_id!r}: shard residues must be upper-case ASCII")
    return raw


def _check_length(name: str, values: Sequence[Any] | None, expected: int) -> None:
    if values is not None and len(values) != expected:
        raise ValueError(f"{name} has {len(values)} entries but there are {expected} ids")


@contextlib.contextmanager
def atomic_hdf5(path: Path) -> Iterator[h5py.File]:
    """Write an HDF5 file under a temporary name; only a complete, fsynced file becomes ``path``.

    Datasets should be created with ``track_times=False`` so that identical content gives
    identical bytes (and SHA-256) across reruns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".h5.tmp")
    try:
        with h5py.File(tmp, "w", track_order=False) as h5:
            yield h5
            h5.flush()
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_shard(
    path: Path,
    ids: Sequence[str],
    sequences: Sequence[bytes],
    *,
    clusters: Sequence[str] | None = None,
    taxa: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> dict:
    """Write one shard atomically and describe it for the manifest.

    The file is written to ``<path>.tmp`` (``path.with_suffix(".h5.tmp")``), flushed, fsynced
    and renamed over ``path``; on any error the temporary file is removed. ``attrs`` may set
    ``split`` (default: the parent directory's name) and ``source``; ``format_version`` is
    always :data:`FORMAT_VERSION`.

    Returns ``{"path": "<split>/<name>", "records": n, "residues": r, "sha256": hex}``, where the
    path is relative to the dataset directory (the last two components of ``path``).
    """
    path = Path(path)
    n = len(ids)
    _check_length("sequences", sequences, n)
    _check_length("clusters", clusters, n)
    _check_length("taxa", taxa, n)
    chunks = [_as_bytes(seq, rid) for rid, seq in zip(ids, sequences, strict=True)]
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    residues = np.frombuffer(b"".join(chunks), dtype=np.uint8)

    file_attrs: dict[str, Any] = {"split": path.parent.name, "source": ""}
    file_attrs.update(attrs or {})
    file_attrs["format_version"] = FORMAT_VERSION

    strings = h5py.string_dtype(encoding="utf-8")
    with atomic_hdf5(path) as h5:
        h5.create_dataset("residues", data=residues, dtype=np.uint8, track_times=False)
        h5.create_dataset("offsets", data=offsets, dtype=np.int64, track_times=False)
        h5.create_dataset(
            "ids", data=np.array(list(ids), dtype=object), dtype=strings, track_times=False
        )
        if clusters is not None:
            h5.create_dataset(
                "cluster",
                data=np.array(list(clusters), dtype=object),
                dtype=strings,
                track_times=False,
            )
        if taxa is not None:
            h5.create_dataset("taxon", data=np.asarray(taxa, dtype=np.int64), track_times=False)
        for key in sorted(file_attrs):
            h5.attrs[key] = file_attrs[key]
    digest = sha256_file(path)
    return {
        "path": f"{path.parent.name}/{path.name}",
        "records": n,
        "residues": int(residues.size),
        "sha256": digest,
    }


def write_manifest(dataset_dir: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (tmp, fsync, replace), sorted keys, indent 2."""
    text = json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    return write_text_atomic(Path(dataset_dir) / MANIFEST_NAME, text)


def read_manifest(dataset_dir: Path) -> dict:
    """Load ``manifest.json``; a missing or malformed file raises :class:`ManifestError`."""
    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (is this a wensu dataset directory?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{path}: manifest is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(
            f"{path}: manifest must be a JSON object, got {type(manifest).__name__}"
        )
    version = manifest.get("format_version")
    if version is not None and version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    return manifest
