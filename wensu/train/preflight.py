"""Checks that run before any training: every impossible setting fails here, in one line.

Each check raises :class:`~wensu.train.settings.TrainConfigError` (a ``ValueError``) naming the
config key, the offending value and what to do instead; the CLI prints it as ``error: ...``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from wensu.checkpoint import check_architecture, read_model_config
from wensu.model import EncoderConfig
from wensu.train.errors import TrainConfigError

TOP_LEVEL_KEYS = {
    "name",
    "seed",
    "ckpt_path",
    "resume",
    "overwrite",
    "resume_anyway",
    "preflight",
    "init_from",
    "compile",
    "threads",
    "masking",
    "optim",
    "schedule",
    "checkpoint",
    "logging",
    "baseline_max_residues",
    "model",
    "data",
    "trainer",
}
# Trainer options the app sets itself.
RESERVED_TRAINER_KEYS = {"callbacks", "logger", "plugins", "use_distributed_sampler"}
TRAINER_EXTRA_KEYS = {"fsdp"}
CHECKPOINT_KEYS = {"every_n_train_steps", "save_best"}
LOGGING_KEYS = {
    "csv",
    "tensorboard",
    "wandb",
    "wandb_project",
    "loss_curve",
    "sample_ids",
    "throughput_window",
}
GPU_ACCELERATORS = ("gpu", "cuda")


def check_keys(settings: Mapping[str, Any]) -> None:
    """No unknown top-level, trainer, checkpoint or logging keys (added with ``+key=...``)."""
    _unknown("", settings, TOP_LEVEL_KEYS)
    _unknown("checkpoint.", settings["checkpoint"], CHECKPOINT_KEYS)
    _unknown("logging.", settings["logging"], LOGGING_KEYS)
    trainer_args = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    reserved = RESERVED_TRAINER_KEYS & set(settings["trainer"])
    if reserved:
        raise TrainConfigError(
            f"trainer.{sorted(reserved)[0]} is set by wensu-train itself and cannot be configured"
        )
    _unknown("trainer.", settings["trainer"], trainer_args | TRAINER_EXTRA_KEYS)


def _unknown(prefix: str, section: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise TrainConfigError(
            f"unknown config key {prefix}{unknown[0]}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys here: {', '.join(sorted(known))}"
        )


def resolved_accelerator(trainer: Mapping[str, Any]) -> str:
    """``cpu`` or ``gpu`` as Lightning will pick it (``auto``: gpu when CUDA is available)."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator in GPU_ACCELERATORS else accelerator


def check_devices(trainer: Mapping[str, Any]) -> None:
    """The requested accelerator and device count exist on this machine."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    devices = trainer.get("devices", "auto")
    if accelerator in GPU_ACCELERATORS:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise TrainConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
                "(use trainer=cpu, or trainer.accelerator=cpu)"
            )
        wanted = _device_count(devices, available)
        if wanted > available:
            raise TrainConfigError(
                f"trainer.devices={devices} asks for {wanted} GPU(s) but this machine has "
                f"{available}"
            )
    elif accelerator == "cpu" and isinstance(devices, list):
        raise TrainConfigError(f"trainer.devices={devices}: on CPU give a process count")
    if accelerator not in (*GPU_ACCELERATORS, "cpu", "auto"):
        raise TrainConfigError(
            f"trainer.accelerator={accelerator!r} is not supported (use cpu, gpu or auto)"
        )
    if isinstance(devices, int) and devices == 0:
        raise TrainConfigError("trainer.devices=0: give at least one device (or -1 for all)")


def _device_count(devices: Any, available: int) -> int:
    if isinstance(devices, list):
        return max(devices) + 1 if devices else 0
    if devices in ("auto", -1, "-1"):
        return available
    try:
        return int(devices)
    except (TypeError, ValueError):
        raise TrainConfigError(f"trainer.devices={devices!r} is not a device count") from None


def check_model_and_data(model: EncoderConfig, data: Mapping[str, Any], accelerator: str) -> list:
    """Attention window vs crop, token budget vs crop; returns notices to print (not errors)."""
    notices = []
    crop = int(data["crop_length"])
    window = model.attention.window
    if window is not None and window >= crop:
        raise TrainConfigError(
            f"model.attention.window={window} is not smaller than data.crop_length={crop}: "
            "the window would cover every example (use attention=dense, or a longer crop)"
        )
    if int(data["max_tokens"]) < crop:
        raise TrainConfigError(
            f"data.max_tokens={data['max_tokens']} is smaller than data.crop_length={crop}: "
            "a full-length example would not fit a batch"
        )
    if model.attention.backend == "flex" and accelerator == "cpu":
        notices.append(
            "model.attention.backend=flex has no backward pass on CPU: training runs the "
            "chunked backend (same attention pattern and results); use flex on GPU"
        )
    return notices


def check_dataset_dir(data: Mapping[str, Any]) -> Path:
    """``data.dataset_dir`` is set and is a directory."""
    value = data.get("dataset_dir")
    if value in (None, "", "???"):
        raise TrainConfigError(
            "data.dataset_dir is not set: pass data.dataset_dir=<a wensu-preprocess output dir>"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TrainConfigError(f"data.dataset_dir={value}: no such directory")
    return path


def resolve_checkpoint(ckpt_path: str | None, resume: bool, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: explicit path, ``last``, or automatic, else None."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path in (None, ""):
        return last if resume and last.is_file() else None
    if ckpt_path == "last":
        if not last.is_file():
            raise TrainConfigError(f"ckpt_path=last but {last} does not exist")
        return last
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise TrainConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return path


def check_resume_checkpoint(path: Path, model: EncoderConfig) -> None:
    """The checkpoint to resume holds the configured architecture (one-line error if not)."""
    check_architecture(read_model_config(path), model, str(path))


def check_strategy(trainer: Mapping[str, Any], accelerator: str) -> None:
    """FSDP needs GPUs in this setup (PyTorch's FSDP runs its collectives on CUDA)."""
    strategy = str(trainer.get("strategy", "auto"))
    if strategy.startswith("fsdp") and accelerator != "gpu":
        raise TrainConfigError(
            f"trainer.strategy={strategy} needs GPUs (trainer.accelerator={accelerator}); "
            "on CPU use trainer=ddp trainer.accelerator=cpu"
        )


def check_duration(trainer: Mapping[str, Any]) -> None:
    """Training has an end: ``max_steps`` or ``max_epochs`` (the schedule needs a horizon)."""
    unset = (None, -1)
    if trainer.get("max_steps", -1) in unset and trainer.get("max_epochs") in unset:
        raise TrainConfigError("set trainer.max_steps (or trainer.max_epochs): both are -1")
