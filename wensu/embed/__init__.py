"""Embedding extraction (``wensu-embed``): FASTA in, embeddings file out.

The parts, in the order a record meets them: :mod:`~wensu.embed.inputs` (scan and quarantine
the FASTA), :mod:`~wensu.embed.batching` (length-sorted token-budget batches),
:mod:`~wensu.embed.model` (checkpoint or model -> encoder), :mod:`~wensu.embed.compute`
(forward passes and pooling), :mod:`~wensu.embed.worker` (one process per device),
:mod:`~wensu.embed.writer` (crash-safe, resumable output) and :mod:`~wensu.embed.file_format`
(the file layout and its reader, also importable as :mod:`wensu.embeddings`).
:mod:`~wensu.embed.settings` holds :class:`EmbedSettings`, :mod:`~wensu.embed.api` the
:func:`embed` function and :mod:`~wensu.embed.cli` the console script.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbedError", "EmbedSettings", "EmbedSummary", "embed", "main"]

# Where each public name lives. They are resolved on first use so that reading an embeddings
# file (wensu.embed.file_format, h5py + numpy) does not import torch and the model.
_PUBLIC = {
    "EmbedError": "wensu.embed.settings",
    "EmbedSettings": "wensu.embed.settings",
    "EmbedSummary": "wensu.embed.api",
    "embed": "wensu.embed.api",
    "main": "wensu.embed.cli",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'wensu.embed' has no attribute {name!r}")
