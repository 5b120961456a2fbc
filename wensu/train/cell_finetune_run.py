"""One cell-type fine-tuning run (``data.kind: cells_labelled``, ``experiment=cells_finetune``).

Starts from a pretrained cell checkpoint (``finetune.checkpoint``; its architecture, gene
vocabulary and binning are kept) or, with ``finetune.pretrained: false``, from fresh weights of
the same shape (the random-init twin), adds a classification head and trains on labelled .h5ad
files (:mod:`wensu.train.cell_labelled_data`). Trainer, checkpoints (``last.ckpt`` atomic,
``best.ckpt`` = lowest weighted validation loss) and kill -9 resume are the shared session's;
training stops early after ``finetune.patience`` validations without improvement. The
classifier for ``wensu-annotate`` is ``checkpoints/best.ckpt``.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import EarlyStopping

from wensu.checkpoint import load_cell_checkpoint, read_checkpoint
from wensu.data.cell_inputs import CellInputError
from wensu.model.cell_classifier import CLASSIFIER_KIND
from wensu.model.cell_encoder import CellCheckpointError
from wensu.train import preflight, session
from wensu.train.cell_finetune import CellClassifierModule, class_weights
from wensu.train.cell_labelled_data import (
    VAL_BY,
    LabelledCellDataModule,
    group_split,
    load_labelled_tokens,
)
from wensu.train.errors import TrainConfigError, UsageError
from wensu.train.resume_guard import record_run_info
from wensu.train.run_info import write_json
from wensu.train.session import Prepared
from wensu.train.settings import build_section

LABELLED_KIND = "cells_labelled"


@dataclass
class FinetuneSettings:
    """The ``finetune`` section."""

    checkpoint: str | None = None
    pretrained: bool = True
    train_layers: int | None = None  # None: all layers; k: the last k (+ head)
    dropout: float = 0.1
    class_weight_power: float = 1.0
    patience: int = 3

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise TrainConfigError(
                "finetune.checkpoint is required: a pretrained cell checkpoint "
                "(wensu-train experiment=cells_pbmc), also for the random-init twin "
                "(finetune.pretrained=false keeps its shape and gene vocabulary)"
            )
        if self.train_layers is not None and int(self.train_layers) < 0:
            raise TrainConfigError("finetune.train_layers must be >= 0 or null (all)")
        if not 0 <= self.dropout < 1:
            raise TrainConfigError(f"finetune.dropout must be in [0, 1), got {self.dropout}")
        if self.patience < 1:
            raise TrainConfigError(f"finetune.patience must be >= 1, got {self.patience}")


DATA_DEFAULTS: dict[str, Any] = {
    "kind": LABELLED_KIND,
    "train_files": [],
    "label_column": "cell_type_coarse",
    "gene_column": None,
    "values": "auto",
    "gene_panel": "shared",
    "panel_from": [],
    "min_genes": 100,
    "max_cells_per_file": None,
    "val_by": "donor",
    "val_fraction": 0.15,
    "max_genes": 256,
    "max_tokens": 4096,
    "max_cells": None,
    "panel_dropout": 0.5,
    "seed": 0,
    "pad_to_multiple": 8,
}


def _data_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - set(DATA_DEFAULTS))
    if unknown:
        raise TrainConfigError(
            f"unknown config key data.{unknown[0]}; valid keys here: {', '.join(DATA_DEFAULTS)}"
        )
    merged = {**DATA_DEFAULTS, **data}
    if merged["val_by"] not in VAL_BY:
        raise TrainConfigError(f"data.val_by must be one of {VAL_BY}, got {merged['val_by']!r}")
    if not 0 <= float(merged["panel_dropout"]) < 1:
        raise TrainConfigError("data.panel_dropout must be in [0, 1)")
    return merged


def _check_resume(path: Path, classes: list[str], panel: list[str]) -> None:
    try:
        checkpoint = read_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file is one message
        raise CellCheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    hparams = checkpoint.get("hyper_parameters", {})
    if hparams.get("kind") != CLASSIFIER_KIND:
        raise CellCheckpointError(f"{path}: not a cell-classifier checkpoint; cannot resume it")
    if hparams.get("classes") != classes or hparams.get("panel") != panel:
        raise CellCheckpointError(
            f"{path}: was trained on other classes or genes than these training files"
        )


def prepare(settings: Mapping[str, Any], run_dir: Path) -> Prepared:
    """Check the config, read the checkpoint and the labelled files; raises UsageError."""
    prepared = Prepared(settings, run_dir)
    try:
        preflight.check_keys({k: v for k, v in settings.items() if k != "finetune"})
        session.check_trainer(settings)
        if settings.get("init_from"):
            raise TrainConfigError("init_from: use finetune.checkpoint for cell fine-tuning")
        finetune = build_section(FinetuneSettings, settings.get("finetune"), "finetune")
        data = _data_settings(settings["data"])
        encoder, vocab, info = load_cell_checkpoint(Path(finetune.checkpoint).expanduser())
        labelled = load_labelled_tokens(
            data["train_files"],
            vocab,
            label_column=data["label_column"],
            gene_column=data["gene_column"],
            gene_panel=data["gene_panel"],
            values=data["values"],
            min_genes=int(data["min_genes"]),
            max_cells_per_file=data["max_cells_per_file"],
            panel_from=[str(p) for p in data["panel_from"] or []],
        )
        groups = labelled.groups if data["val_by"] == "donor" else labelled.files
        train_index, val_index, held = group_split(
            groups, labelled.labels, float(data["val_fraction"])
        )
        binning = dict(info.get("dataset", {}).get("binning") or {})
        tokens = {
            "num_bins": int(encoder.cfg.num_bins) - 1,
            "target_sum": float(binning.get("target_sum", 1e4)),
            "max_genes": int(data["max_genes"]),
            "label_column": data["label_column"],
            "gene_panel": data["gene_panel"],
        }
        prepared.datamodule = LabelledCellDataModule(
            labelled,
            train_index,
            val_index,
            num_bins=tokens["num_bins"],
            target_sum=tokens["target_sum"],
            max_genes=tokens["max_genes"],
            max_tokens=int(data["max_tokens"]),
            max_cells=data["max_cells"],
            seed=int(data["seed"]),
            panel_dropout=float(data["panel_dropout"]),
            pad_to_multiple=int(data["pad_to_multiple"]),
        )
        if session.resolve_resume(prepared) is not None:
            _check_resume(prepared.resume_from, labelled.classes, labelled.panel)
    except (ValueError, CellInputError) as error:
        raise UsageError(" ".join(str(error).split())) from error
    model = encoder.cfg.to_dict()
    model["max_genes"] = max(int(model["max_genes"]), tokens["max_genes"])
    prepared.finetune, prepared.labelled, prepared.encoder = finetune, labelled, encoder
    prepared.vocab, prepared.tokens, prepared.model = vocab, tokens, model
    prepared.split = {
        "by": data["val_by"],
        "held_out": held,
        "train_cells": int(len(train_index)),
        "val_cells": int(len(val_index)),
    }
    return prepared


def _module(prepared) -> CellClassifierModule:
    settings, finetune, labelled = prepared.settings, prepared.finetune, prepared.labelled
    train_labels = labelled.labels[prepared.datamodule.train_set.indices]
    counts = np.bincount(train_labels, minlength=len(labelled.classes))
    module = CellClassifierModule(
        model=prepared.model,
        vocab=prepared.vocab,
        classes=labelled.classes,
        panel=labelled.panel,
        tokens=prepared.tokens,
        class_weight=class_weights(counts, finetune.class_weight_power),
        optim=settings["optim"],
        schedule=settings["schedule"],
        dropout=finetune.dropout,
        train_layers=finetune.train_layers,
        seed=int(settings["seed"]),
        source={
            "checkpoint": str(Path(finetune.checkpoint).expanduser().resolve()),
            "pretrained": bool(finetune.pretrained),
            "files": labelled.report["files"],
            "split": prepared.split,
        },
    )
    if finetune.pretrained and prepared.resume_from is None:
        module.model.encoder.load_state_dict(prepared.encoder.state_dict())
    return module


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_classifier(settings: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Fine-tune as configured; returns the summary on rank zero."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    prepared = prepare(settings, run_dir)
    session.seed_and_threads(settings)
    module = _module(prepared)
    trainer = session.build_trainer(prepared, None)
    # Before the checkpoint callbacks, so a checkpoint holds the stopper's updated state.
    stopper = EarlyStopping(monitor="val/loss", mode="min", patience=prepared.finetune.patience)
    trainer.callbacks.insert(0, stopper)
    if session.is_rank_zero():
        record_run_info(  # keeps earlier sessions and the resume fingerprint
            settings,
            run_dir,
            {
                "kind": LABELLED_KIND,
                **session.run_record(module, prepared),
                "source": module.hparams["source"],
                "classes": prepared.labelled.classes,
                "panel_genes": len(prepared.labelled.panel),
                "trainable_parameters": sum(
                    p.numel() for p in module.model.parameters() if p.requires_grad
                ),
            },
        )
    session.fit(trainer, module, prepared, validate=False)  # validation below is best.ckpt's
    if not trainer.is_global_zero:
        return None
    best = run_dir / "checkpoints" / "best.ckpt"
    best_metrics = _best_metrics(trainer, module, best, prepared)
    summary = {
        "kind": LABELLED_KIND,
        "pretrained": bool(prepared.finetune.pretrained),
        "classes": prepared.labelled.classes,
        "split": prepared.split,
        "stopped_early": bool(stopper.stopped_epoch > 0 or trainer.should_stop),
        "best_checkpoint": str(best) if best.is_file() else None,
        **best_metrics,
        **session.summary_record(trainer, module, prepared, started),
        "cpu_seconds_this_session": round(_cpu_seconds() - cpu_started, 3),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _best_metrics(trainer, module, best: Path, prepared) -> dict[str, float]:
    """Validation metrics of ``best.ckpt`` (the weights annotation uses)."""
    if best.is_file():
        state = read_checkpoint(best)["state_dict"]
        module.load_state_dict(state)
    final = trainer.validate(module, datamodule=prepared.datamodule, verbose=False)
    final = final[0] if final else {}
    return {
        "val_loss": float(final.get("val/loss", float("nan"))),
        "val_accuracy": float(final.get("val/accuracy", float("nan"))),
        "val_macro_f1": float(final.get("val/macro_f1", float("nan"))),
    }
