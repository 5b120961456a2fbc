"""One cell-model training run (``data.kind: cells``): checks, model, data, trainer, summary.

The one entry (:mod:`wensu.train.run`) dispatches here. Trainer, callbacks, loggers, fitting and
the atomic checkpoint writer are the shared session's (:mod:`wensu.train.session`), so kill -9 /
resume behaves as for a protein run. The
model's ``vocab_size`` and ``num_bins`` may be ``null`` in the config: they are then taken from
the dataset (``vocab.json`` and ``binning.num_bins`` + 1); given values must match it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wensu.checkpoint import checkpoint_kind, read_checkpoint
from wensu.model import count_parameters
from wensu.model.cell_encoder import CELL_KIND, CellCheckpointError, CellEncoderConfig
from wensu.train import preflight, session
from wensu.train.cell_datamodule import CellDataModule
from wensu.train.cell_module import CellMaskedModule
from wensu.train.errors import TrainConfigError, UsageError
from wensu.train.resume_guard import record_run_info
from wensu.train.run_info import manifest_sha256, write_json
from wensu.train.session import Prepared
from wensu.train.settings import MaskingSettings


def bin_frequencies(datamodule: CellDataModule, num_bins: int) -> list[float]:
    """Add-one-smoothed frequencies of the bins 0..num_bins-1 over the training split."""
    counts = np.ones(num_bins, dtype=np.float64)
    cells = datamodule.train_cells
    for shard in cells._shards:
        with h5py.File(cells.dataset_dir / shard["path"], "r") as h5:
            values = np.asarray(h5["bins"][:], dtype=np.int64)
        if values.size and int(values.max()) >= num_bins:
            raise TrainConfigError(
                f"{shard['path']}: holds bin {int(values.max())} but model.num_bins is {num_bins}"
            )
        counts += np.bincount(values, minlength=num_bins)
    return (counts / counts.sum()).tolist()


def _model_config(model: Mapping[str, Any], datamodule: CellDataModule) -> CellEncoderConfig:
    manifest = datamodule.train_cells.manifest
    from_data = {
        "vocab_size": len(datamodule.train_cells.vocab),
        "num_bins": int(manifest["config"]["binning"]["num_bins"]) + 1,
    }
    model = dict(model)
    for key, value in from_data.items():
        if model.get(key) is None:
            model[key] = value
        elif int(model[key]) != value:
            raise TrainConfigError(
                f"model.{key}={model[key]} but the dataset {datamodule.dataset_dir} needs "
                f"{value} (leave it null to take it from the data)"
            )
    if model.get("max_genes") is None:
        model["max_genes"] = datamodule.max_genes
    return CellEncoderConfig.from_dict(model, source="model config")


def _check_resume(path: Path, model: CellEncoderConfig) -> None:
    try:
        checkpoint = read_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file is one message
        raise CellCheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    if checkpoint_kind(checkpoint) != CELL_KIND:
        raise CellCheckpointError(f"{path}: not a cell-model checkpoint; cannot resume from it")
    saved = checkpoint["hyper_parameters"]["model"]
    wanted = model.to_dict()
    fields = ("vocab_size", "num_bins", "num_layers", "d_model", "num_heads", "ffn_dim")
    differing = [f for f in fields if saved.get(f) != wanted[f]]
    if differing:
        have = ", ".join(f"{f}={saved.get(f)}" for f in differing)
        want = ", ".join(f"{f}={wanted[f]}" for f in differing)
        raise CellCheckpointError(f"{path}: checkpoint has {have} but the config asks for {want}")


def prepare(settings: Mapping[str, Any], run_dir: Path) -> Prepared:
    """Validate, open the dataset, build the module; raises :class:`UsageError`."""
    prepared = Prepared(settings, run_dir)
    try:
        preflight.check_keys(settings)
        session.check_trainer(settings, {"masking": MaskingSettings})
        data_cfg = dict(settings["data"])
        data_cfg["dataset_dir"] = preflight.check_dataset_dir(data_cfg)
        try:
            datamodule = CellDataModule(**data_cfg)
        except TypeError as error:
            raise TrainConfigError(f"data config: {error}") from None
        datamodule.setup("fit")
        prepared.datamodule = datamodule
        prepared.model_config = _model_config(settings["model"], datamodule)
        if prepared.model_config.max_genes < datamodule.max_genes:
            raise TrainConfigError(
                f"model.max_genes={prepared.model_config.max_genes} is smaller than "
                f"data.max_genes={datamodule.max_genes}"
            )
        if session.resolve_resume(prepared) is not None:
            _check_resume(prepared.resume_from, prepared.model_config)
        if settings["init_from"]:
            raise TrainConfigError("init_from is not supported for cell models yet")
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from error
    return prepared


def train_cells(settings: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Masked-expression pretraining as configured; returns the summary on rank zero."""
    started = time.perf_counter()
    prepared = prepare(settings, run_dir)
    session.seed_and_threads(settings)
    datamodule = prepared.datamodule
    frequencies = bin_frequencies(datamodule, prepared.model_config.num_bins)
    dataset_dir = Path(datamodule.dataset_dir)
    module = CellMaskedModule(
        model=prepared.model_config.to_dict(),
        vocab=list(datamodule.train_cells.vocab.genes),
        bin_frequencies=frequencies,
        optim=settings["optim"],
        schedule=settings["schedule"],
        masking=settings["masking"],
        seed=int(settings["seed"]),
        dataset={
            "dir": str(dataset_dir.resolve()),
            "manifest_sha256": manifest_sha256(dataset_dir),
            "holdout": datamodule.train_cells.manifest["config"].get("holdout", {}),
            "binning": datamodule.train_cells.manifest["config"].get("binning", {}),
        },
    )
    baseline_loss = _baseline_loss(frequencies, datamodule)
    trainer = session.build_trainer(prepared, baseline_loss)
    if session.is_rank_zero():
        record_run_info(  # keeps earlier sessions and the resume fingerprint
            settings,
            run_dir,
            {
                "kind": "cells",
                **session.run_record(module, prepared),
                "dataset": {
                    **module.hparams["dataset"],
                    "train_cells": len(datamodule.train_cells),
                    "val_cells": len(datamodule.val_cells),
                },
                "bin_frequencies": frequencies,
            },
        )
    final = session.fit(trainer, module, prepared)
    if not trainer.is_global_zero:
        return None
    seconds = session.throughput_of(trainer).train_seconds
    cells_trained = _cells_trained(module, datamodule)
    summary = {
        "kind": "cells",
        "val_loss": float(final.get("val/loss", float("nan"))),
        "val_accuracy": float(final.get("val/accuracy", float("nan"))),
        "val_baseline_loss": float(final.get("val/baseline_loss", float("nan"))),
        "val_loss_ratio_to_baseline": float(final.get("val/loss_ratio_to_baseline", float("nan"))),
        **session.summary_record(trainer, module, prepared, started),
        "cells_trained": cells_trained,
        "train_seconds": round(seconds, 3),
        "cells_per_s": round(cells_trained / seconds, 2) if seconds else None,
        "tokens_per_s": round(module.tokens_seen / seconds, 1) if seconds else None,
        "parameters": count_parameters(module.model),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _cells_trained(module: CellMaskedModule, datamodule: CellDataModule) -> int:
    """Cells in the batches trained so far (whole epochs times the split, plus the partial one)."""
    sampler = datamodule.train_sampler.sampler
    per_epoch = [len(b) for b in sampler.rank_batches(0)]
    full, rest = divmod(module.batches_trained, max(len(per_epoch), 1))
    if rest == 0:
        return full * sum(per_epoch)
    current = [len(b) for b in sampler.rank_batches(full)]
    return full * sum(per_epoch) + sum(current[:rest])


def _baseline_loss(frequencies: list[float], datamodule: CellDataModule) -> float:
    """Expected CE of the frequency predictor on uniformly masked validation genes."""
    counts = np.zeros(len(frequencies))
    for index in range(len(datamodule.val_cells)):
        counts += np.bincount(datamodule.val_cells[index]["bins"], minlength=len(frequencies))
    return float(-(counts * np.log(frequencies)).sum() / max(counts.sum(), 1))
