"""Resume only provably the same work: a run directory's fingerprint and its session history.

``run_info.json`` records a fingerprint of what shapes the results: the dataset (resolved
directory and manifest SHA-256), the model config and the options that change the numbers
(seed, masking, optimizer, schedule and its horizon, batch and crop settings, precision,
accumulation, clipping). A rerun that would resume the run directory compares its own
fingerprint with the recorded one and stops with one line naming what changed, unless

* ``overwrite=true``: start fresh; the previous checkpoints, logs and records are removed; or
* ``resume_anyway=true``: continue, and the changes are recorded in the new session's entry.

``run_info.json`` is never overwritten by a resume: each session appends to ``sessions``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wensu.data.shards import MANIFEST_NAME, sha256_file
from wensu.train.errors import TrainConfigError
from wensu.train.preflight import check_dataset_dir, resolve_checkpoint
from wensu.train.run_info import git_commit, package_versions, write_json

RUN_INFO = "run_info.json"
DATA_KEYS = (
    "kind", "train_split", "val_split", "max_tokens", "val_max_tokens", "crop_length",
    "concatenate", "max_batch_size", "pad_to_multiple", "max_genes", "max_cells",
)  # fmt: skip
TRAINER_KEYS = (
    "precision", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
)  # fmt: skip
# Written by a training run; `overwrite=true` removes them before starting afresh.
RUN_OUTPUTS = ("checkpoints", "logs", "tensorboard", "samples", RUN_INFO, "summary.json",
               "loss_curve.png", "config.yaml")  # fmt: skip


def fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's results depend on, as plain JSON values."""
    data = settings["data"]
    trainer = settings["trainer"]
    schedule = dict(settings["schedule"])
    schedule["horizon"] = schedule.get("total_steps") or trainer.get("max_steps")
    if data.get("kind") == "cells_labelled":  # cell fine-tuning: labelled .h5ad files
        dataset = {"train_files": list(data.get("train_files") or [])}
        dataset["finetune"] = settings.get("finetune")
    else:
        dataset_dir = check_dataset_dir(data)
        manifest = dataset_dir / MANIFEST_NAME
        dataset = {
            "dir": str(dataset_dir.resolve()),
            "manifest_sha256": sha256_file(manifest) if manifest.is_file() else None,
        }
    return _plain(
        {
            "dataset": dataset,
            "model": settings["model"],
            "seed": settings["seed"],
            "init_from": settings.get("init_from"),
            "masking": settings["masking"],
            "optim": settings["optim"],
            "schedule": schedule,
            "data": {k: data[k] for k in DATA_KEYS if k in data},
            "trainer": {k: trainer[k] for k in TRAINER_KEYS if k in trainer},
        }
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): node}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every leaf that differs (keys missing on one side included)."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key, "<unset>") != after.get(key, "<unset>"):
            label = "dataset manifest" if key == "dataset.manifest_sha256" else key
            changes.append(f"{label}: {before.get(key, '<unset>')} -> {after.get(key, '<unset>')}")
    return changes


def recorded_fingerprint(info: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint a run_info.json records; older files without one compare on the dataset."""
    if "fingerprint" in info:
        return info["fingerprint"]
    dataset = info.get("dataset", {})
    keys = ("dir", "manifest_sha256")
    return {"dataset": {key: dataset.get(key) for key in keys}}


def _read_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainConfigError(
            f"{path}: unreadable run record ({error}); use overwrite=true to start this run dir "
            "afresh, or a new hydra.run.dir"
        ) from None
    if not isinstance(info, dict):
        raise TrainConfigError(f"{path}: run record is not a JSON object")
    return info


def check_resume(settings: Mapping[str, Any], run_dir: Path) -> list[str]:
    """Refuse a resume whose fingerprint differs from the recorded one; returns the accepted
    changes (non-empty only with ``resume_anyway=true``). ``overwrite=true`` skips the check."""
    if settings.get("overwrite"):
        return []
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_INFO
    checkpoint = resolve_checkpoint(settings["ckpt_path"], bool(settings["resume"]), run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if checkpoint is None:
        if last.is_file():  # resume=false on a run dir that already trained
            raise TrainConfigError(
                f"{run_dir} already holds a trained run ({last}) and resume=false: use "
                "overwrite=true to start it afresh, or a new hydra.run.dir"
            )
        return []
    if not info_path.is_file():
        info_path = checkpoint.parent.parent / RUN_INFO  # ckpt_path into another run dir
        if not info_path.is_file():
            return []
    changes = differences(recorded_fingerprint(_read_info(info_path)), fingerprint(settings))
    if changes and not settings.get("resume_anyway"):
        more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
        raise TrainConfigError(
            f"cannot resume {checkpoint}, the setup changed since {info_path}: "
            f"{changes[0]}{more}; start afresh "
            "with overwrite=true (or a new hydra.run.dir), or continue anyway with "
            "resume_anyway=true (recorded in run_info.json)"
        )
    return changes


def clear_run_dir(run_dir: Path) -> list[str]:
    """Remove a previous run's outputs from ``run_dir`` (``overwrite=true``); returns them."""
    removed = []
    for name in RUN_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def record_run_info(settings: Mapping[str, Any], run_dir: Path, payload: dict[str, Any]) -> None:
    """Write ``run_info.json``: a fresh run records ``payload``; a resumed one keeps the earlier
    record and appends this session (with any changes accepted by ``resume_anyway=true``)."""
    path = Path(run_dir) / RUN_INFO
    new_print = fingerprint(settings)
    session = {
        "started": payload.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from": payload.get("resumed_from"),
        "git": payload.get("git", git_commit()),
        "versions": payload.get("versions", package_versions()),
    }
    if payload.get("resumed_from") and path.is_file():
        record = _read_info(path)
        changes = differences(recorded_fingerprint(record), new_print)
        if changes:
            session["accepted_changes"] = changes
        sessions = record.setdefault("sessions", [_legacy_session(record)])
        sessions.append(session)
    else:
        record = dict(payload)
        record["sessions"] = [session]
    record["fingerprint"] = new_print
    write_json(path, record)


def _legacy_session(record: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("started", "resumed_from", "git", "versions")
    return {key: record.get(key) for key in keys}
