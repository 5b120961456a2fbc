"""What every training run shares, whatever the modality: the session start (option types, resume
fingerprint, ``overwrite``), the trainer-side checks, the Lightning ``Trainer`` with its loggers,
checkpoints and callbacks, fitting with the final validation and ``last.ckpt``, and the fields
every ``run_info.json`` and ``summary.json`` carry.

The modality runs (:mod:`~wensu.train.protein_run`, :mod:`~wensu.train.cell_run`,
:mod:`~wensu.train.cell_finetune_run`) build their module and data on top of this; the one
entry :func:`wensu.train.run.train` picks which.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.strategies import FSDPStrategy

from wensu.checkpoint import save_atomic
from wensu.model import count_parameters
from wensu.model.layers import TransformerLayer
from wensu.progress import interactive
from wensu.train import preflight
from wensu.train.base_module import EncoderModule
from wensu.train.callbacks import LossCurve, RNGState, SampleLog, ThroughputMonitor
from wensu.train.errors import UsageError
from wensu.train.options import check_option_types
from wensu.train.resume_guard import check_resume, clear_run_dir
from wensu.train.run_info import git_commit, package_versions
from wensu.train.settings import OptimSettings, ScheduleSettings, build_section

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary name, fsynced and renamed: kill -9 never leaves a
    truncated ``last.ckpt``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_atomic(checkpoint, Path(path))


def is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


class Prepared:
    """Everything a run builds and checks before training (a modality adds its own fields)."""

    def __init__(self, settings: Mapping[str, Any], run_dir: Path):
        self.settings = settings
        self.run_dir = run_dir
        self.notices: list[str] = []
        self.model_config: Any = None
        self.datamodule: LightningDataModule | None = None
        self.resume_from: Path | None = None


# ---- before training -------------------------------------------------------------------------


def start_session(settings: Mapping[str, Any], run_dir: Path) -> None:
    """Option types, the resume fingerprint, then (rank zero) ``overwrite`` and config.yaml:
    a refused rerun leaves the run directory exactly as it was."""
    try:
        check_option_types(settings)
        check_resume(settings, run_dir)
    except ValueError as error:
        raise UsageError(" ".join(str(error).split())) from error
    if not is_rank_zero():
        return
    if settings.get("overwrite"):
        removed = clear_run_dir(run_dir)
        if removed:
            log.warning("overwrite=true: removed %s from %s", ", ".join(removed), run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(dict(settings))))


def check_trainer(settings: Mapping[str, Any], sections: Mapping[str, type] = ()) -> str:
    """The checks every run makes after ``preflight.check_keys``: devices, strategy, duration,
    and the optim/schedule sections (plus ``sections``: key -> settings class). -> accelerator."""
    trainer_cfg = settings["trainer"]
    preflight.check_devices(trainer_cfg)
    accelerator = preflight.resolved_accelerator(trainer_cfg)
    preflight.check_strategy(trainer_cfg, accelerator)
    preflight.check_duration(trainer_cfg)
    wanted = {"optim": OptimSettings, "schedule": ScheduleSettings, **dict(sections)}
    for key, cls in wanted.items():
        build_section(cls, settings[key], key)
    return accelerator


def resolve_resume(prepared: Prepared) -> Path | None:
    """The checkpoint this session resumes from (``ckpt_path``, or ``last.ckpt`` with resume)."""
    settings = prepared.settings
    prepared.resume_from = preflight.resolve_checkpoint(
        settings["ckpt_path"], bool(settings["resume"]), prepared.run_dir
    )
    return prepared.resume_from


def seed_and_threads(settings: Mapping[str, Any]) -> None:
    if settings["threads"]:
        torch.set_num_threads(int(settings["threads"]))
    seed_everything(int(settings["seed"]), workers=True, verbose=False)


# ---- the trainer -----------------------------------------------------------------------------


def build_trainer(prepared: Prepared, baseline_loss: float | None) -> Trainer:
    settings, run_dir = prepared.settings, prepared.run_dir
    trainer_cfg = dict(settings["trainer"])
    if not interactive(sys.stdout):  # Lightning's bar: live on a terminal, not in a log file
        trainer_cfg["enable_progress_bar"] = False
    strategy = strategy_from(trainer_cfg)
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


def strategy_from(trainer_cfg: dict[str, Any]) -> Any:
    """Lightning's strategy for ``trainer.strategy`` (FSDP wraps each transformer layer);
    pops ``trainer.fsdp``."""
    fsdp_options = trainer_cfg.pop("fsdp", None)
    if trainer_cfg.get("strategy") != "fsdp":
        return trainer_cfg.get("strategy", "auto")
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


# ---- training and its records ------------------------------------------------------------------


def fit(
    trainer: Trainer, module: EncoderModule, prepared: Prepared, validate: bool = True
) -> dict[str, float]:
    """Fit (resuming where the session resumes), then the final validation (unless
    ``validate=False``) and ``last.ckpt``; -> the final validation metrics (may be empty)."""
    trainer.fit(
        module,
        datamodule=prepared.datamodule,
        ckpt_path=str(prepared.resume_from) if prepared.resume_from else None,
        weights_only=True,
    )
    final = []
    if validate:
        final = trainer.validate(module, datamodule=prepared.datamodule, verbose=False)
    trainer.save_checkpoint(prepared.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return dict(final[0]) if final else {}


def run_record(module: EncoderModule, prepared: Prepared) -> dict[str, Any]:
    """The ``run_info.json`` fields of every run (a modality adds its data and baselines)."""
    return {
        "git": git_commit(),
        "versions": package_versions(),
        "parameters": count_parameters(module.model),
        "resumed_from": str(prepared.resume_from) if prepared.resume_from else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def throughput_of(trainer: Trainer) -> ThroughputMonitor:
    return next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))


def summary_record(
    trainer: Trainer, module: EncoderModule, prepared: Prepared, started: float
) -> dict[str, Any]:
    """The ``summary.json`` fields of every run (a modality adds its metrics)."""
    return {
        "global_step": int(trainer.global_step),
        "epochs": round(module.batches_trained / max(trainer.num_training_batches, 1), 3),
        "tokens_seen": int(module.tokens_seen),
        "wall_seconds_this_session": round(time.perf_counter() - started, 3),
        "world_size": int(trainer.world_size),
        "last_checkpoint": str(prepared.run_dir / "checkpoints" / "last.ckpt"),
        "resumed_from": str(prepared.resume_from) if prepared.resume_from else None,
    }
