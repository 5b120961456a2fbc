"""Masked-LM pretraining with Lightning and Hydra (``wensu-train``).

``MaskedLMModule`` (module.py), ``ProteinDataModule`` (datamodule.py) and ``train`` (run.py)
are imported lazily, so ``wensu-train --help`` and config errors do not pay for Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MaskedLMModule": "wensu.train.module",
    "ProteinDataModule": "wensu.train.datamodule",
    "train": "wensu.train.run",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wensu.train' has no attribute {name!r}")
