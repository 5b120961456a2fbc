"""Reading embeddings written by ``wensu-embed`` (the HDF5 layout is defined here).

HDF5 layout (``format=h5``, the default)::

    /                                   file attributes: format_version, checkpoint,
                                        checkpoint_sha256, layers (absolute layer numbers),
                                        pooling, num_layers, d_model, wensu_version,
                                        model_config (JSON), settings (JSON)
    /<encoded id>/                      one group per sequence; attributes id (original), length,
                                        complete=True (written last)
    /<encoded id>/layer_<n>/mean        (d,)     mean over residues (no <cls>/<eos>/padding)
    /<encoded id>/layer_<n>/per_residue (L, d)   one vector per residue, no special tokens
    /<encoded id>/layer_<n>/cls         (d,)     the <cls> token's vector

Layer ``n`` is absolute: 0 is the embedding output, ``num_layers`` the final (normed) output, so
``layer=-1`` here means ``num_layers``. Group names are the sequence ids percent-encoded
(``%`` ``/`` and control characters, e.g. ``sp|P1/2`` -> ``sp|P1%2F2``); the original id is the
group's ``id`` attribute, and :func:`decode_id` inverts :func:`encode_id` exactly.

``format=npz|pt`` writes one file per sequence into a directory instead, with fair-esm
``extract.py`` keys: ``label``, ``mean_representations``, ``representations`` (per residue),
``bos_representations`` (cls), each keyed by absolute layer (``.pt``: nested dicts of tensors;
``.npz``: flat keys ``mean_representations/6``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
KINDS = ("mean", "per_residue", "cls")
ESM_KEYS = {
    "mean": "mean_representations",
    "per_residue": "representations",
    "cls": "bos_representations",
}

# One sequence's embedding: {absolute layer: {"mean": (d,), "per_residue": (L, d), "cls": (d,)}}.
SequenceEmbedding = dict[int, dict[str, np.ndarray]]


class EmbeddingsFileError(ValueError):
    """An embeddings file is missing, unreadable or lacks the requested layer or kind."""


def _must_encode(char: str) -> bool:
    return char in "%/" or ord(char) < 0x20 or ord(char) == 0x7F


def encode_id(record_id: str) -> str:
    """HDF5 group / file name for a sequence id (reversible percent-encoding)."""
    if record_id in (".", ".."):
        return record_id.replace(".", "%2E")
    return "".join(f"%{ord(c):02X}" if _must_encode(c) else c for c in record_id)


def decode_id(name: str) -> str:
    """Inverse of :func:`encode_id`."""
    out: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == "%" and _is_hex(name[i + 1 : i + 3]):
            out.append(chr(int(name[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789ABCDEFabcdef" for c in text)


def layer_name(layer: int) -> str:
    """Subgroup name of an absolute layer number."""
    return f"layer_{layer}"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise EmbeddingsFileError(f"kind must be one of {KINDS}, got {kind!r}")


def _open(path: str | os.PathLike) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise EmbeddingsFileError(f"{path}: embeddings file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise EmbeddingsFileError(f"{path}: not a readable HDF5 embeddings file ({err})") from None


def file_info(path: str | os.PathLike) -> dict[str, Any]:
    """File attributes of an embeddings file (JSON attributes decoded)."""
    with _open(path) as handle:
        return _attrs(handle)


def _attrs(handle: h5py.File) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key, value in handle.attrs.items():
        if isinstance(value, np.ndarray):
            value = [_plain(v) for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        if key in ("model_config", "settings") and isinstance(value, str):
            value = json.loads(value)
        info[key] = value
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def resolve_layer(layer: int, num_layers: int, available: Sequence[int], path: Path) -> int:
    """Absolute layer number for ``layer`` (negative counts from the end, -1 = final)."""
    absolute = layer % (num_layers + 1) if -(num_layers + 1) <= layer < 0 else layer
    if absolute not in available:
        raise EmbeddingsFileError(
            f"{path}: layer {layer} (= {absolute}) not stored; layers in file: {list(available)}"
        )
    return absolute


def iter_embeddings(
    path: str | os.PathLike, layer: int = -1, kind: str = "mean"
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(id, array)`` for every complete sequence, in the file's (sorted name) order.

    ``kind`` is ``"mean"`` (d,), ``"per_residue"`` (L, d) or ``"cls"`` (d,). One sequence is in
    memory at a time.
    """
    _check_kind(kind)
    path = Path(path)
    with _open(path) as handle:
        info = _attrs(handle)
        if kind not in info.get("pooling", []):
            raise EmbeddingsFileError(
                f"{path}: kind {kind!r} not stored; pooling in file: {info.get('pooling')}"
            )
        absolute = resolve_layer(layer, int(info["num_layers"]), info["layers"], path)
        key = f"{layer_name(absolute)}/{kind}"
        for name, group in handle.items():
            if not group.attrs.get("complete", False):
                continue
            yield str(group.attrs.get("id", decode_id(name))), group[key][()]


def read(path: str | os.PathLike, layer: int = -1, kind: str = "mean") -> dict[str, np.ndarray]:
    """All complete embeddings of one layer and kind as ``{id: array}``."""
    return dict(iter_embeddings(path, layer=layer, kind=kind))


def load_matrix(
    path: str | os.PathLike, kind: str = "mean", layer: int = -1
) -> tuple[list[str], np.ndarray]:
    """``(ids, X)`` with one row per sequence, for scikit-learn; ``kind`` is mean or cls."""
    if kind == "per_residue":
        raise EmbeddingsFileError("load_matrix needs one vector per sequence: kind mean or cls")
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for record_id, vector in iter_embeddings(path, layer=layer, kind=kind):
        ids.append(record_id)
        rows.append(vector)
    if not rows:
        raise EmbeddingsFileError(f"{path}: no complete embeddings in file")
    return ids, np.stack(rows).astype(np.float32, copy=False)
