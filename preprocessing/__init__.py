"""Pipelines from raw public data to wensu inputs (installed as ``wensu.preprocessing``).

``run_preprocess(...)`` / the ``wensu-preprocess`` console script: FASTA files, directories or
URLs -> validated, deduplicated, (optionally MMseqs2-clustered) train/valid/test HDF5 shards.
Names are imported on first use, so sub-packages (e.g. ``cells``) load without the pipeline.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "run_preprocess": "pipeline",
    "PreprocessConfig": "config",
    "load_config": "config",
    "PreprocessError": "errors",
    "InputError": "errors",
    "ConfigError": "errors",
    "AccountingError": "errors",
    "ToolError": "errors",
    "OutputExistsError": "errors",
    "OutputError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
