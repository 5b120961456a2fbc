"""Loading the model to embed with, and identifying it (hash, trained context).

The hash goes into the embeddings file so a rerun with different weights cannot append to it:
SHA-256 of the checkpoint file (of every file, in name order, for a Hugging Face folder), or of
the weights themselves for an in-memory encoder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wensu.alphabet import Alphabet, get_alphabet
from wensu.checkpoint import load, read_checkpoint
from wensu.data.shards import sha256_file
from wensu.model import Encoder
from wensu.model.config import EncoderConfig

# Hyper-parameter of wensu-train checkpoints holding the training context in residues.
CONTEXT_KEY = "max_length"


class CheckpointError(ValueError):
    """The checkpoint to embed with cannot be read."""


@dataclass
class LoadedModel:
    """An encoder ready to embed with, plus what identifies it in the output file."""

    encoder: Encoder
    alphabet: Alphabet
    description: str  # checkpoint path, or "<in-memory Encoder>"
    sha256: str
    trained_context: int | None  # residues, when the checkpoint records it
    source_for_workers: tuple  # ("path", str) or ("weights", config dict, state dict)


def weights_sha256(encoder: Encoder) -> str:
    """SHA-256 over parameter names, dtypes, shapes and bytes (in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint file, or of a folder's files (relative name + content hash)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def trained_context(path: Path) -> int | None:
    """Training crop length stored in a Lightning checkpoint's hyper-parameters, if any."""
    if not path.is_file():
        return None
    try:
        checkpoint = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - e.g. a legacy (non-zip) file; the default applies then
        return None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    value = hparams.get(CONTEXT_KEY) if isinstance(hparams, Mapping) else None
    valid = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if valid else None


def load_model(checkpoint_or_model: Any) -> LoadedModel:
    """A :class:`LoadedModel` from a checkpoint path (wensu or ESM-2) or an ``Encoder``."""
    if isinstance(checkpoint_or_model, Encoder):
        encoder = checkpoint_or_model
        state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
        return LoadedModel(
            encoder=encoder,
            alphabet=get_alphabet(),
            description="<in-memory Encoder>",
            sha256=weights_sha256(encoder),
            trained_context=None,
            source_for_workers=("weights", encoder.cfg.to_dict(), state),
        )
    if not isinstance(checkpoint_or_model, str | os.PathLike):
        kind = type(checkpoint_or_model).__name__
        raise CheckpointError(f"expected a checkpoint path or a wensu Encoder, got {kind}")
    path = Path(checkpoint_or_model)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    encoder, alphabet = _load_path(path)
    return LoadedModel(
        encoder=encoder,
        alphabet=alphabet,
        description=str(path.resolve()),
        sha256=checkpoint_sha256(path),
        trained_context=trained_context(path),
        source_for_workers=("path", str(path)),
    )


def _load_path(path: Path) -> tuple[Encoder, Alphabet]:
    try:
        return load(path, map_location="cpu")
    except ValueError as err:
        message = str(err)
        raise CheckpointError(
            message if str(path) in message else f"checkpoint {path}: {message}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unreadable file must become a clear error
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a wensu or ESM-2 checkpoint "
            f"({type(err).__name__}: {err})"
        ) from None


def model_from_source(source: tuple) -> tuple[Encoder, Alphabet]:
    """Rebuild the model inside a worker process from ``LoadedModel.source_for_workers``."""
    if source[0] == "path":
        return _load_path(Path(source[1]))
    _, config, state = source
    encoder = Encoder(EncoderConfig.from_dict(config))
    encoder.load_state_dict(state)
    return encoder.eval(), get_alphabet()
