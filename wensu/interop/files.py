"""`load_esm2(path)`: an ESM-2 checkpoint file or directory on disk -> wensu `Encoder`.

Accepted layouts (detected from the contents, not only the name):

* fair-esm `.pt` (`esm2_t6_8M_UR50D.pt` ...): `{"model": state dict, "cfg"/"args": ...}`;
* a Hugging Face directory: `config.json` plus `model.safetensors`, `pytorch_model.bin`, or their
  sharded `*.index.json` forms; a single `.safetensors`/`.bin` file with `config.json` beside it;
* a bare state dict `.pt`/`.bin` in either naming (HF names need a `config.json` beside it).

Every `torch.load` uses `weights_only=True`. fair-esm files pickle their hyper-parameters as an
`argparse.Namespace`, which `weights_only=True` rejects by default; `argparse.Namespace` (a plain
attribute bag with no code of its own) is the one class allowed in addition, through
`torch.serialization.safe_globals`. Anything else in the pickle is refused with an
`EsmCheckpointError` naming the file and the rejected class; nothing runs arbitrary code.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wensu.interop.esm import EsmCheckpointError
from wensu.interop.fair_esm import from_fair_esm
from wensu.interop.hf import from_hf
from wensu.model.config import AttentionConfig

HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def torch_load_checkpoint(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` allowing `argparse.Namespace` (fair-esm hparams)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused is None:
            raise EsmCheckpointError(f"{path}: not a readable torch checkpoint") from None
        raise EsmCheckpointError(
            f"{path}: the file pickles {refused.group(1)}; only tensors, plain containers and "
            "argparse.Namespace are loaded (weights_only=True, no code from the file runs); "
            "re-save just the state dict and config"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise EsmCheckpointError(f"{path}: not a readable torch checkpoint ({error})") from None


def _load_tensor_file(path: Path) -> Mapping[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise EsmCheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    loaded = torch_load_checkpoint(path)
    if not isinstance(loaded, Mapping):
        raise EsmCheckpointError(f"{path}: expected a state dict, found {type(loaded).__name__}")
    return loaded


def _load_sharded(index_path: Path) -> dict[str, Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EsmCheckpointError(f"{index_path}: not a valid weight index ({error})") from None
    tensors: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise EsmCheckpointError(f"{index_path}: lists shard {shard!r}, which is missing")
        tensors.update(_load_tensor_file(shard_path))
    return tensors


def _read_hf_config(directory: Path, weights: Path) -> dict:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise EsmCheckpointError(
            f"{weights}: Hugging Face ESM weights need the model's config.json beside them "
            f"(looked for {config_path})"
        )
    try:
        return json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise EsmCheckpointError(f"{config_path}: not valid JSON ({error})") from None


def _load_hf_directory(directory: Path, attention):
    for name in HF_WEIGHT_FILES:
        weights = directory / name
        if weights.is_file():
            break
    else:
        raise EsmCheckpointError(
            f"{directory}: no ESM-2 weights found (expected one of {list(HF_WEIGHT_FILES)})"
        )
    config = _read_hf_config(directory, weights)
    tensors = _load_sharded(weights) if name.endswith(".index.json") else _load_tensor_file(weights)
    return from_hf(tensors, config, attention=attention, source=str(weights))


def _is_hf_naming(names) -> bool:
    return any(
        name.startswith(("esm.embeddings.", "embeddings.word_embeddings.")) for name in names
    )


def load_esm2(path: str | Path, *, attention: AttentionConfig | Mapping | None = None):
    """A wensu `Encoder` (eval mode, float32, CPU) holding the ESM-2 weights at `path`.

    `attention` selects the wensu attention backend/window (default dense = exactly ESM-2).
    Raises `EsmCheckpointError` (a `ValueError`) naming the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        return _load_hf_directory(path, attention)
    if not path.is_file():
        raise EsmCheckpointError(f"{path}: no such ESM-2 checkpoint file or directory")
    if path.name.endswith(".index.json"):
        tensors = _load_sharded(path)
        return from_hf(
            tensors, _read_hf_config(path.parent, path), attention=attention, source=str(path)
        )
    loaded = _load_tensor_file(path)
    names = list(loaded)
    if "model" in loaded and isinstance(loaded["model"], Mapping):
        return from_fair_esm(loaded, attention=attention, source=str(path))
    if _is_hf_naming(names):
        config = _read_hf_config(path.parent, path)
        return from_hf(loaded, config, attention=attention, source=str(path))
    if any("layers.0." in name for name in names):
        return from_fair_esm(loaded, attention=attention, source=str(path))
    hint = " (a Lightning checkpoint: load it with wensu.load)" if "state_dict" in loaded else ""
    raise EsmCheckpointError(
        f"{path}: unknown checkpoint layout{hint}: neither fair-esm nor Hugging Face ESM-2 "
        f"names (first keys: {names[:5]})"
    )
