"""The one training entry: ``train(settings, run_dir)`` behind ``wensu-train``.

The modality is chosen once, from ``data.kind``, and the run for it does the rest on the shared
session (:mod:`wensu.train.session`) and module base (:mod:`wensu.train.base_module`):

    (no kind) / protein  -> protein_run.train_protein        masked-LM pretraining on protein shards
    cells                -> cell_run.train_cells             masked-expression pretraining
    cells_labelled       -> cell_finetune_run.train_classifier  cell-type fine-tuning
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from wensu.train.cell_finetune_run import train_classifier
from wensu.train.cell_run import train_cells
from wensu.train.errors import UsageError
from wensu.train.protein_run import prepare, train_protein
from wensu.train.session import start_session, strategy_from

__all__ = ["MODALITIES", "modality", "prepare", "strategy_from", "train"]

Run = Callable[[Mapping[str, Any], Path], "dict[str, Any] | None"]
MODALITIES: dict[str, Run] = {
    "protein": train_protein,
    "cells": train_cells,
    "cells_labelled": train_classifier,
}


def modality(settings: Mapping[str, Any]) -> str:
    """``data.kind`` (``protein`` when absent); an unknown kind is a one-line config error."""
    data = settings.get("data") or {}
    kind = str(data.get("kind") or "protein") if isinstance(data, Mapping) else "protein"
    if kind not in MODALITIES:
        raise UsageError(f"data.kind={kind!r} is not one of {', '.join(MODALITIES)}")
    return kind


def train(settings: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Run training as configured; returns the summary on global rank zero (else None)."""
    run_dir = Path(run_dir)
    run = MODALITIES[modality(settings)]
    start_session(settings, run_dir)
    return run(settings, run_dir)
