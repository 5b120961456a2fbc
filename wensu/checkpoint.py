"""Loading and writing wensu checkpoints.

A wensu checkpoint is a Lightning checkpoint whose ``hyper_parameters["model"]`` is
``EncoderConfig.to_dict()`` (plain python types) and whose encoder weights sit under
``state_dict["model.<name>"]``; everything in it loads with ``torch.load(weights_only=True)``.
:func:`load` also takes the safetensors export of :mod:`wensu.export` and, through
:func:`wensu.interop.load_esm2`, ESM-2 files (fair-esm or Hugging Face).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wensu.alphabet import Alphabet, get_alphabet
from wensu.atomic import atomic_file
from wensu.interop import load_esm2
from wensu.model import Encoder, EncoderConfig
from wensu.model.cell_classifier import CLASSIFIER_KIND, CellClassifier
from wensu.model.cell_encoder import (
    CELL_KIND,
    NUM_SPECIAL,
    CellCheckpointError,
    CellEncoder,
    CellEncoderConfig,
)

MODEL_PREFIX = "model."
EXPORT_CONFIG_NAME = "wensu_config.json"
EXPORT_WEIGHTS_NAME = "model.safetensors"
EXPORT_FORMAT = "wensu-encoder"
# Fields that decide parameter shapes or their meaning: a checkpoint must match them.
ARCHITECTURE_FIELDS = (
    "num_layers",
    "d_model",
    "num_heads",
    "ffn_dim",
    "vocab_size",
    "ffn",
    "moe_num_experts",
)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit; the message names the file and why."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint holds a model of another architecture than the one configured."""


def is_wensu_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded object is a wensu (Lightning) checkpoint."""
    if not isinstance(checkpoint, Mapping):
        return False
    hparams = checkpoint.get("hyper_parameters")
    return (
        isinstance(hparams, Mapping)
        and isinstance(hparams.get("model"), Mapping)
        and isinstance(checkpoint.get("state_dict"), Mapping)
    )


def is_cell_checkpoint(checkpoint: Any) -> bool:
    """Whether a loaded object is a cell-expression checkpoint (``hyper_parameters.kind``)."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    # "cells": pretrained cell encoder; "cells_classifier": fine-tuned cell-type classifier
    return isinstance(hparams, Mapping) and hparams.get("kind") in ("cells", "cells_classifier")


def unreadable_reason(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line. torch's own message
    suggests retrying with ``weights_only=False`` (code execution); that advice is never passed
    on: a checkpoint holding more than tensors and plain values is not loaded."""
    text = str(error)
    refused = re.search(r"GLOBAL (\S+)", text)
    if refused:
        return (
            f"the file pickles {refused.group(1)}, which wensu never loads (checkpoints are read "
            "tensors-only, so no code from a file runs); re-save only the weights and plain values"
        )
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    if "weights_only" in first:
        first = type(error).__name__
    return f"not a readable checkpoint ({first.strip()})"


def read_or_refuse(
    path: Path, error: type[ValueError], missing: str = "no such checkpoint file"
) -> Any:
    """:func:`read_checkpoint`, with a missing or unreadable (or unsafe) file raised as
    ``error`` in one line naming it."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return read_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise error(f"{path}: {unreadable_reason(err)}") from None


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """The object stored at ``path``, read the one way wensu reads checkpoints: tensors only
    (``weights_only=True``: no code from the file runs) and memory-mapped (``mmap=True``: a
    large file is not copied into memory to look at its hyper-parameters)."""
    return torch.load(path, map_location=map_location, weights_only=True, mmap=True)


def load(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Encoder, Alphabet]:
    """``(encoder in eval mode, alphabet)`` from a wensu checkpoint, export or ESM-2 file.

    Accepts a Lightning checkpoint written by ``wensu-train`` (or
    :func:`save_encoder_checkpoint`), a directory (or its ``model.safetensors``) written by
    :func:`wensu.export.export_safetensors`, and anything :func:`wensu.interop.load_esm2`
    reads. Raises :class:`CheckpointError` (a ``ValueError``) naming the file.
    """
    path = Path(path)
    if path.is_dir() and (path / EXPORT_CONFIG_NAME).is_file():
        return load_export(path, map_location), get_alphabet()
    if path.is_file() and path.suffix == ".safetensors":
        if (path.parent / EXPORT_CONFIG_NAME).is_file():
            return load_export(path.parent, map_location), get_alphabet()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    if path.is_file() and path.suffix not in (".safetensors", ".json"):
        try:
            checkpoint = read_checkpoint(path, map_location)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError):
            checkpoint = None  # e.g. a fair-esm file (argparse.Namespace): load_esm2 handles it
        if is_cell_checkpoint(checkpoint):
            raise CheckpointError(
                f"{path}: a single-cell expression model, not a protein encoder; load it with "
                "wensu.checkpoint.load_cell_checkpoint (wensu-eval probe=cell_type) or, "
                "for a cell-type classifier, use wensu-annotate"
            )
        if is_wensu_checkpoint(checkpoint):
            encoder = encoder_from_checkpoint(checkpoint, str(path))
            return _place(encoder, map_location), get_alphabet()
    return _place(load_esm2(path), map_location).eval(), get_alphabet()


def _place(encoder: Encoder, map_location: Any) -> Encoder:
    return encoder if map_location is None else encoder.to(map_location)


def encoder_from_checkpoint(checkpoint: Mapping[str, Any], source: str) -> Encoder:
    """Rebuild the encoder from a loaded wensu checkpoint (strict: every tensor must fit)."""
    config = EncoderConfig.from_dict(checkpoint["hyper_parameters"]["model"], source=source)
    state = {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(MODEL_PREFIX)
    }
    encoder = Encoder(config)
    _load_state(encoder, state, source)
    return encoder.eval()


def _load_state(encoder: Encoder, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        name
        for name in set(expected) & set(state)
        if tuple(expected[name].shape) != tuple(state[name].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            name = wrong[0]
            parts.append(
                f"shape of {name}: {tuple(state[name].shape)} in the file, "
                f"{tuple(expected[name].shape)} in the model"
            )
        raise CheckpointError(f"{source}: encoder weights do not fit ({'; '.join(parts)})")
    encoder.load_state_dict(state, strict=True)


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``model`` hyper-parameters stored in a wensu checkpoint (tensors are memory-mapped)."""
    path = Path(path)
    checkpoint = read_or_refuse(path, CheckpointError)
    if not is_wensu_checkpoint(checkpoint):
        raise CheckpointError(
            f"{path}: not a wensu training checkpoint (no model hyper-parameters)"
        )
    return dict(checkpoint["hyper_parameters"]["model"])


def check_architecture(saved: Mapping[str, Any], wanted: EncoderConfig, source: str) -> None:
    """Raise :class:`CheckpointMismatchError` when ``saved`` describes another architecture.

    The attention backend and window may differ (e.g. fine-tuning a dense model with windowed
    attention for long sequences): they change no parameter.
    """
    defaults = EncoderConfig().to_dict()
    wanted_dict = wanted.to_dict()
    differing = [
        name for name in ARCHITECTURE_FIELDS if saved.get(name, defaults[name]) != wanted_dict[name]
    ]
    if differing:
        have = ", ".join(f"{n}={saved.get(n, defaults[n])}" for n in differing)
        want = ", ".join(f"{n}={wanted_dict[n]}" for n in differing)
        raise CheckpointMismatchError(
            f"{source}: checkpoint holds a model with {have} but the config asks for {want} "
            "(choose the matching model=... config or another checkpoint)"
        )


def load_encoder_weights(encoder: Encoder, path: str | os.PathLike) -> Encoder:
    """Copy the weights at ``path`` (anything :func:`load` reads) into ``encoder``.

    The architectures must match (:func:`check_architecture`); attention settings may differ.
    """
    loaded, _ = load(path)
    check_architecture(loaded.cfg.to_dict(), encoder.cfg, str(path))
    _load_state(encoder, loaded.state_dict(), str(path))
    return encoder


def save_encoder_checkpoint(
    encoder: Encoder, path: str | os.PathLike, hyper_parameters: Mapping[str, Any] | None = None
) -> Path:
    """Write a minimal Lightning-compatible wensu checkpoint of ``encoder`` (atomically).

    ``hyper_parameters`` adds plain-typed entries next to ``model`` (e.g. ``max_length``).
    """
    path = Path(path)
    hparams = {"model": encoder.cfg.to_dict(), **dict(hyper_parameters or {})}
    save_atomic(lightning_checkpoint(encoder, hparams), path)
    return path


def lightning_checkpoint(model: torch.nn.Module, hyper_parameters: dict[str, Any]) -> dict:
    """A minimal Lightning checkpoint dict: ``model``'s weights (CPU copies) under
    ``state_dict["model.<name>"]`` and the given plain ``hyper_parameters``, at step 0."""
    import lightning

    return {
        "state_dict": {
            f"{MODEL_PREFIX}{name}": tensor.detach().cpu().clone()
            for name, tensor in model.state_dict().items()
        },
        "hyper_parameters": hyper_parameters,
        "hparams_name": "kwargs",
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
    }


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, fsync, then rename over ``path``."""
    with atomic_file(path, "wb") as handle:
        torch.save(obj, handle)


def load_export(directory: Path, map_location: Any = "cpu") -> Encoder:
    """Encoder from a :func:`wensu.export.export_safetensors` directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = directory / EXPORT_CONFIG_NAME
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path}: unreadable export config ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{config_path}: not a wensu export (format != {EXPORT_FORMAT!r})")
    weights = directory / EXPORT_WEIGHTS_NAME
    try:
        state = load_file(weights, device=str(map_location or "cpu"))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({error})") from None
    encoder = Encoder(EncoderConfig.from_dict(meta["model"], source=str(config_path)))
    encoder = encoder.to(map_location or "cpu")
    _load_state(encoder, state, str(weights))
    return encoder.eval()


# Cell-model checkpoints: the encoder is wensu.model.cell_encoder.CellEncoder; its gene
# vocabulary travels in hyper_parameters["vocab"] (ids from wensu.cell_vocab.NUM_SPECIAL on).


def checkpoint_kind(checkpoint: Any) -> str | None:
    """``hyper_parameters["kind"]`` of a loaded checkpoint (``cells`` ...), None for protein
    checkpoints and anything else."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    kind = hparams.get("kind") if isinstance(hparams, Mapping) else None
    return kind if isinstance(kind, str) else None


def is_cell_checkpoint_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable file holding a cell-model checkpoint (False otherwise)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        checkpoint = read_checkpoint(path)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a cell checkpoint
        return False
    return is_cell_checkpoint(checkpoint)


def read_cell_checkpoint(path: Path) -> dict:
    """The loaded checkpoint at ``path`` when it is a pretrained cell encoder; otherwise a
    :class:`CellCheckpointError` naming the file and what it holds instead."""
    checkpoint = read_or_refuse(path, CellCheckpointError, "no such cell checkpoint file")
    if checkpoint_kind(checkpoint) != CELL_KIND:
        hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
        if isinstance(hparams, Mapping) and hparams.get("kind") == "cells_classifier":
            raise CellCheckpointError(
                f"{path}: a fine-tuned cell-type classifier, not a pretrained cell encoder "
                "(annotate cells with it: wensu-annotate checkpoint=...)"
            )
        if isinstance(hparams, Mapping) and isinstance(hparams.get("model"), Mapping):
            raise CellCheckpointError(
                f"{path}: a protein model checkpoint, not a cell model (load it with wensu.load; "
                "cell models are trained with wensu-train experiment=cells_pbmc)"
            )
        raise CellCheckpointError(f"{path}: not a wensu cell-model checkpoint")
    return checkpoint


def load_cell_checkpoint(
    path: str | os.PathLike,
) -> tuple[CellEncoder, list[str], dict[str, Any]]:
    """``(encoder in eval mode, gene vocabulary, info)`` from a cell training checkpoint.

    ``vocab`` lists the genes in token-id order starting at id 5 (after the 5 special tokens);
    ``info`` holds the other plain hyper-parameters (``bin_frequencies``, ``masking``,
    ``dataset``, ...) and ``global_step``. Raises :class:`CellCheckpointError` (a ValueError)
    naming the file for a missing/corrupt file, a protein checkpoint or weights that do not fit.
    """
    path = Path(path)
    checkpoint = read_cell_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    try:
        cfg = CellEncoderConfig.from_dict(hparams["model"], source=str(path))
    except (KeyError, TypeError) as error:
        raise CellCheckpointError(f"{path}: cell model config unreadable ({error})") from None
    vocab = [str(g) for g in hparams.get("vocab", [])]
    if len(vocab) + NUM_SPECIAL != cfg.vocab_size:
        raise CellCheckpointError(
            f"{path}: stores {len(vocab)} genes but the model has vocab_size {cfg.vocab_size} "
            f"(= genes + {NUM_SPECIAL} special tokens)"
        )
    state = {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in checkpoint.get("state_dict", {}).items()
        if name.startswith(MODEL_PREFIX)
    }
    encoder = CellEncoder(cfg)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CellCheckpointError(f"{path}: cell encoder weights do not fit ({first})") from None
    info = {k: v for k, v in hparams.items() if k not in ("model", "vocab")}
    info["global_step"] = int(checkpoint.get("global_step", 0))
    return encoder.eval(), vocab, info


def save_cell_checkpoint(
    encoder: CellEncoder,
    vocab: list[str],
    path: str | os.PathLike,
    hyper_parameters: Mapping[str, Any] | None = None,
) -> Path:
    """Write a minimal Lightning-compatible cell checkpoint (atomically) that
    :func:`load_cell_checkpoint` reads; ``hyper_parameters`` adds plain-typed entries."""
    path = Path(path)
    hparams = {
        "kind": CELL_KIND,
        "model": encoder.cfg.to_dict(),
        "vocab": [str(g) for g in vocab],
        **dict(hyper_parameters or {}),
    }
    save_atomic(lightning_checkpoint(encoder, hparams), path)
    return path


def load_cell_classifier(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """``(CellClassifier in eval mode, info)`` from a ``wensu-train experiment=cells_finetune``
    checkpoint; ``info`` holds ``vocab``, ``classes``, ``panel``, ``tokens`` (binning) and the
    other plain hyper-parameters. Protein checkpoints and pretrained cell encoders are refused
    with a :class:`CellCheckpointError` naming the file."""
    path = Path(path)
    checkpoint = read_or_refuse(path, CellCheckpointError)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    kind = hparams.get("kind") if isinstance(hparams, Mapping) else None
    if kind == CELL_KIND:
        raise CellCheckpointError(
            f"{path}: a pretrained cell encoder without a cell-type head; fine-tune it first "
            "(wensu-train experiment=cells_finetune finetune.checkpoint=<it> ...)"
        )
    if kind != CLASSIFIER_KIND:
        what = "a protein model checkpoint" if is_wensu_checkpoint(checkpoint) else "not a wensu"
        raise CellCheckpointError(
            f"{path}: {what}, not a cell-type classifier (cell tools need a checkpoint from "
            "wensu-train experiment=cells_finetune)"
        )
    try:
        cfg = CellEncoderConfig.from_dict(hparams["model"], source=str(path))
        classes = [str(c) for c in hparams["classes"]]
        vocab = [str(g) for g in hparams["vocab"]]
    except (KeyError, TypeError) as error:
        raise CellCheckpointError(f"{path}: classifier config unreadable ({error})") from None
    if len(vocab) + NUM_SPECIAL != cfg.vocab_size:
        raise CellCheckpointError(f"{path}: vocabulary and model vocab_size disagree")
    classifier = CellClassifier(CellEncoder(cfg), len(classes), float(hparams.get("dropout", 0)))
    state = {
        name[len(MODEL_PREFIX) :]: tensor
        for name, tensor in checkpoint.get("state_dict", {}).items()
        if name.startswith(MODEL_PREFIX)
    }
    try:
        classifier.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CellCheckpointError(f"{path}: classifier weights do not fit ({first})") from None
    info = {k: v for k, v in hparams.items() if k != "model"}
    info["global_step"] = int(checkpoint.get("global_step", 0))
    return classifier.eval(), info
