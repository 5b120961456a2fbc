"""One training run from a resolved config: checks, model, data, trainer, fit, summary.

Everything that can be wrong with the inputs is checked before the trainer starts (see
:mod:`wensu.train.preflight`); those errors surface as :class:`UsageError` so the CLI can print
them in one line. The run directory receives::

    config.yaml        resolved config          run_info.json   code, versions, data, baseline
    checkpoints/       last.ckpt, best.ckpt     logs/           CSV (and TensorBoard) logs
    loss_curve.png     train/val loss           summary.json    final metrics, tokens, time
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import TorchCheckpointIO

from wensu.checkpoint import load_encoder_weights, save_atomic
from wensu.model import EncoderConfig, count_parameters
from wensu.model.layers import TransformerLayer
from wensu.progress import interactive
from wensu.train import preflight
from wensu.train.callbacks import LossCurve, RNGState, SampleLog, ThroughputMonitor
from wensu.train.datamodule import ProteinDataModule
from wensu.train.errors import TrainConfigError, UsageError
from wensu.train.memory import check_memory, processes_per_machine
from wensu.train.metrics import perplexity
from wensu.train.module import MaskedLMModule
from wensu.train.options import check_option_types
from wensu.train.resume_guard import check_resume, clear_run_dir, record_run_info
from wensu.train.run_info import (
    git_commit,
    manifest_sha256,
    package_versions,
    unigram_baseline,
    write_json,
)
from wensu.train.settings import (
    MaskingSettings,
    OptimSettings,
    ScheduleSettings,
    build_section,
)

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary name, fsynced and renamed: kill -9 never leaves a
    truncated ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_atomic(checkpoint, Path(path))


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class Prepared:
    """Everything built and checked before training."""

    def __init__(self, settings: Mapping[str, Any], run_dir: Path):
        self.settings = settings
        self.run_dir = run_dir
        self.notices: list[str] = []
        self.model_config: EncoderConfig | None = None
        self.datamodule: ProteinDataModule | None = None
        self.resume_from: Path | None = None


def prepare(settings: Mapping[str, Any], run_dir: Path) -> Prepared:
    """Validate the config, open the dataset and find the checkpoint; raises UsageError."""
    prepared = Prepared(settings, run_dir)
    try:
        preflight.check_keys(settings)
        trainer_cfg = settings["trainer"]
        preflight.check_devices(trainer_cfg)
        accelerator = preflight.resolved_accelerator(trainer_cfg)
        preflight.check_strategy(trainer_cfg, accelerator)
        model_config = EncoderConfig.from_dict(settings["model"], source="model config")
        build_section(OptimSettings, settings["optim"], "optim")
        build_section(ScheduleSettings, settings["schedule"], "schedule")
        build_section(MaskingSettings, settings["masking"], "masking")
        data_cfg = dict(settings["data"])
        prepared.notices += preflight.check_model_and_data(model_config, data_cfg, accelerator)
        data_cfg["dataset_dir"] = preflight.check_dataset_dir(data_cfg)
        preflight.check_duration(trainer_cfg)
        if settings.get("preflight", True):
            check_memory(
                model_config,
                int(data_cfg["max_tokens"]),
                str(trainer_cfg.get("precision", "32-true")),
                accelerator,
                processes_per_machine(trainer_cfg, accelerator),
                int(data_cfg["crop_length"]),
            )
        prepared.model_config = model_config
        prepared.datamodule = _datamodule(data_cfg)
        prepared.datamodule.setup("fit")  # opens both splits, checks shard checksums
        prepared.resume_from = preflight.resolve_checkpoint(
            settings["ckpt_path"], bool(settings["resume"]), run_dir
        )
        if prepared.resume_from is not None:
            preflight.check_resume_checkpoint(prepared.resume_from, model_config)
        if settings["init_from"] and prepared.resume_from is None:
            init = Path(settings["init_from"]).expanduser()
            if not init.exists():
                raise TrainConfigError(f"init_from={settings['init_from']}: no such file")
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from error
    return prepared


def _datamodule(data_cfg: Mapping[str, Any]) -> ProteinDataModule:
    options = dict(data_cfg)
    dataset_dir = options.pop("dataset_dir")
    if options.get("verify") == "open" and not _is_rank_zero():
        # Rank zero hashes every shard before training; the other ranks check lazily instead
        # of hashing the whole dataset once more each.
        options["verify"] = "lazy"
    try:
        return ProteinDataModule(dataset_dir, **options)
    except TypeError as error:
        raise TrainConfigError(f"data config: {error}") from None


def _module(prepared: Prepared) -> MaskedLMModule:
    settings = prepared.settings
    module = MaskedLMModule(
        model=prepared.model_config.to_dict(),
        optim=settings["optim"],
        schedule=settings["schedule"],
        masking=settings["masking"],
        seed=settings["seed"],
        max_length=int(settings["data"]["crop_length"]) - 2,
        compile=bool(settings["compile"]),
    )
    if settings["init_from"] and prepared.resume_from is None:
        try:
            load_encoder_weights(module.model, settings["init_from"])
        except ValueError as error:
            raise UsageError(" ".join(str(error).split())) from error
    return module


def _strategy(trainer_cfg: dict[str, Any]) -> Any:
    fsdp_options = trainer_cfg.pop("fsdp", None)
    if trainer_cfg.get("strategy") != "fsdp":
        return trainer_cfg.get("strategy", "auto")
    from lightning.pytorch.strategies import FSDPStrategy

    options = dict(fsdp_options or {})
    return FSDPStrategy(
        auto_wrap_policy={TransformerLayer},
        sharding_strategy=options.get("sharding_strategy", "FULL_SHARD"),
        state_dict_type=options.get("state_dict_type", "full"),
        cpu_offload=bool(options.get("cpu_offload", False)),
        limit_all_gathers=bool(options.get("limit_all_gathers", True)),
    )


def _loggers(settings: Mapping[str, Any], run_dir: Path) -> list:
    logging_cfg = settings["logging"]
    loggers: list = []
    if logging_cfg["csv"]:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="logs"))
    try:
        if logging_cfg["tensorboard"]:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard"))
        if logging_cfg["wandb"]:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(
                WandbLogger(
                    project=logging_cfg["wandb_project"],
                    name=settings["name"],
                    save_dir=str(run_dir),
                )
            )
    except ModuleNotFoundError as error:
        raise UsageError(f"logging: {error} (pip install it or switch it off)") from None
    return loggers


def _callbacks(settings: Mapping[str, Any], run_dir: Path, baseline_loss: float | None) -> list:
    checkpoint_cfg, logging_cfg = settings["checkpoint"], settings["logging"]
    checkpoints = run_dir / "checkpoints"
    callbacks: list = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=int(checkpoint_cfg["every_n_train_steps"]),
            save_top_k=0,
            save_last=True,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        ),
        ThroughputMonitor(window=int(logging_cfg["throughput_window"])),
        RNGState(),
    ]
    if checkpoint_cfg["save_best"]:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="best",
                monitor="val/loss",
                mode="min",
                save_top_k=1,
                save_on_train_epoch_end=False,
                enable_version_counter=False,
            )
        )
    if logging_cfg["loss_curve"]:
        every = int(settings["trainer"].get("log_every_n_steps", 10))
        callbacks.append(LossCurve(run_dir / "loss_curve.png", every, baseline_loss))
    if logging_cfg["sample_ids"]:
        callbacks.append(SampleLog(run_dir / "samples"))
    return callbacks


def build_trainer(prepared: Prepared, baseline_loss: float | None) -> Trainer:
    settings, run_dir = prepared.settings, prepared.run_dir
    trainer_cfg = dict(settings["trainer"])
    if not interactive(sys.stdout):  # Lightning's bar: live on a terminal, not in a log file
        trainer_cfg["enable_progress_bar"] = False
    strategy = _strategy(trainer_cfg)
    trainer_cfg["strategy"] = strategy
    plugins = [] if not isinstance(strategy, str) else [AtomicCheckpointIO()]
    return Trainer(
        **trainer_cfg,
        default_root_dir=str(run_dir),
        logger=_loggers(settings, run_dir) or False,
        callbacks=_callbacks(settings, run_dir, baseline_loss),
        plugins=plugins or None,
        use_distributed_sampler=False,
    )


def write_run_info(prepared: Prepared, module: MaskedLMModule, baseline: dict) -> None:
    settings = prepared.settings
    dataset_dir = Path(settings["data"]["dataset_dir"])
    record_run_info(
        settings,
        prepared.run_dir,
        {
            "git": git_commit(),
            "versions": package_versions(),
            "dataset": {
                "dir": str(dataset_dir.resolve()),
                "manifest_sha256": manifest_sha256(dataset_dir),
                "train_records": len(prepared.datamodule.train_records),
                "val_records": len(prepared.datamodule.val_records),
            },
            "unigram_baseline": baseline,
            "parameters": count_parameters(module.model),
            "resumed_from": str(prepared.resume_from) if prepared.resume_from else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def start_session(settings: Mapping[str, Any], run_dir: Path) -> None:
    """Option types, the resume fingerprint, then (rank zero) ``overwrite`` and config.yaml:
    a refused rerun leaves the run directory exactly as it was."""
    try:
        check_option_types(settings)
        check_resume(settings, run_dir)
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from error
    if not _is_rank_zero():
        return
    if settings.get("overwrite"):
        removed = clear_run_dir(run_dir)
        if removed:
            log.warning("overwrite=true: removed %s from %s", ", ".join(removed), run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(dict(settings))))


def train(settings: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Run training as configured; returns the summary on global rank zero (else None)."""
    from wensu.train.cell_run import is_cell_run, train_cells

    run_dir = Path(run_dir)
    start_session(settings, run_dir)
    if is_cell_run(settings):  # data.kind: cells -> masked-expression pretraining
        return train_cells(settings, run_dir)
    started = time.perf_counter()
    prepared = prepare(settings, run_dir)
    if settings["threads"]:
        torch.set_num_threads(int(settings["threads"]))
    for notice in prepared.notices:
        log.warning(notice)
    seed_everything(int(settings["seed"]), workers=True, verbose=False)
    module = _module(prepared)
    baseline = None
    if _is_rank_zero():
        baseline = unigram_baseline(
            prepared.datamodule.dataset_dir,
            prepared.datamodule.train_split,
            prepared.datamodule.val_split,
            max_residues=settings["baseline_max_residues"],
        )
    trainer = build_trainer(prepared, baseline["loss"] if baseline else None)
    if _is_rank_zero():
        write_run_info(prepared, module, baseline)
        if prepared.resume_from:
            log.info("resuming from %s", prepared.resume_from)
    trainer.fit(
        module,
        datamodule=prepared.datamodule,
        ckpt_path=str(prepared.resume_from) if prepared.resume_from else None,
        weights_only=True,
    )
    final = trainer.validate(module, datamodule=prepared.datamodule, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    if not trainer.is_global_zero:
        return None
    summary = _summary(trainer, module, final[0] if final else {}, baseline, started, prepared)
    write_json(run_dir / "summary.json", summary)
    return summary


def _summary(
    trainer: Trainer,
    module: MaskedLMModule,
    final: Mapping[str, float],
    baseline: dict | None,
    started: float,
    prepared: Prepared,
) -> dict[str, Any]:
    throughput = next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))
    best = next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    val_loss = float(final.get("val/loss", float("nan")))
    tokens = int(module.tokens_seen)
    summary = {
        "val_loss": val_loss,
        "val_perplexity": perplexity(val_loss),
        "val_accuracy": float(final.get("val/accuracy", float("nan"))),
        "unigram_baseline_perplexity": baseline["perplexity"] if baseline else None,
        "unigram_baseline_loss": baseline["loss"] if baseline else None,
        "global_step": int(trainer.global_step),
        "epochs": round(module.batches_trained / max(trainer.num_training_batches, 1), 3),
        "tokens_seen": tokens,
        "train_seconds": round(throughput.train_seconds, 3),
        "tokens_per_s": round(tokens / throughput.train_seconds, 1)
        if throughput.train_seconds
        else None,
        "wall_seconds_this_session": round(time.perf_counter() - started, 3),
        "world_size": int(trainer.world_size),
        "last_checkpoint": str(prepared.run_dir / "checkpoints" / "last.ckpt"),
        "best_checkpoint": best.best_model_path or None if best else None,
        "best_val_loss": float(best.best_model_score)
        if best is not None and best.best_model_score is not None
        else None,
        "resumed_from": str(prepared.resume_from) if prepared.resume_from else None,
    }
    if baseline:
        summary["perplexity_ratio_to_baseline"] = summary["val_perplexity"] / baseline["perplexity"]
    return summary
