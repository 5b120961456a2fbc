"""One protein masked-LM run: checks, model, data, trainer, fit, summary.

Everything that can be wrong with the inputs is checked before the trainer starts (see
:mod:`wensu.train.preflight`); those errors surface as :class:`UsageError` so the CLI can print
them in one line. The run directory receives::

    config.yaml        resolved config          run_info.json   code, versions, data, baseline
    checkpoints/       last.ckpt, best.ckpt     logs/           CSV (and TensorBoard) logs
    loss_curve.png     train/val loss           summary.json    final metrics, tokens, time
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from wensu.checkpoint import load_encoder_weights
from wensu.model import EncoderConfig
from wensu.train import preflight, session
from wensu.train.datamodule import ProteinDataModule
from wensu.train.errors import TrainConfigError, UsageError
from wensu.train.memory import check_memory, processes_per_machine
from wensu.train.metrics import perplexity
from wensu.train.module import MaskedLMModule
from wensu.train.resume_guard import record_run_info
from wensu.train.run_info import manifest_sha256, unigram_baseline, write_json
from wensu.train.session import Prepared
from wensu.train.settings import MaskingSettings

log = logging.getLogger(__name__)


def prepare(settings: Mapping[str, Any], run_dir: Path) -> Prepared:
    """Validate the config, open the dataset and find the checkpoint; raises UsageError."""
    prepared = Prepared(settings, run_dir)
    try:
        preflight.check_keys(settings)
        trainer_cfg = settings["trainer"]
        accelerator = session.check_trainer(settings, {"masking": MaskingSettings})
        model_config = EncoderConfig.from_dict(settings["model"], source="model config")
        data_cfg = dict(settings["data"])
        prepared.notices += preflight.check_model_and_data(model_config, data_cfg, accelerator)
        data_cfg["dataset_dir"] = preflight.check_dataset_dir(data_cfg)
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
        if session.resolve_resume(prepared) is not None:
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
    options.pop("kind", None)  # data.kind chose this run
    if options.get("verify") == "open" and not session.is_rank_zero():
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


def train_protein(settings: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """Masked-LM pretraining as configured; returns the summary on global rank zero."""
    started = time.perf_counter()
    prepared = prepare(settings, run_dir)
    for notice in prepared.notices:
        log.warning(notice)
    session.seed_and_threads(settings)
    module = _module(prepared)
    baseline = None
    if session.is_rank_zero():
        baseline = unigram_baseline(
            prepared.datamodule.dataset_dir,
            prepared.datamodule.train_split,
            prepared.datamodule.val_split,
            max_residues=settings["baseline_max_residues"],
        )
    trainer = session.build_trainer(prepared, baseline["loss"] if baseline else None)
    if session.is_rank_zero():
        dataset_dir = Path(settings["data"]["dataset_dir"])
        record_run_info(  # keeps earlier sessions and the resume fingerprint
            settings,
            run_dir,
            {
                **session.run_record(module, prepared),
                "dataset": {
                    "dir": str(dataset_dir.resolve()),
                    "manifest_sha256": manifest_sha256(dataset_dir),
                    "train_records": len(prepared.datamodule.train_records),
                    "val_records": len(prepared.datamodule.val_records),
                },
                "unigram_baseline": baseline,
            },
        )
        if prepared.resume_from:
            log.info("resuming from %s", prepared.resume_from)
    final = session.fit(trainer, module, prepared)
    if not trainer.is_global_zero:
        return None
    summary = _summary(trainer, module, final, baseline, started, prepared)
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
    seconds = session.throughput_of(trainer).train_seconds
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
        **session.summary_record(trainer, module, prepared, started),
        "train_seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "best_checkpoint": best.best_model_path or None if best else None,
        "best_val_loss": float(best.best_model_score)
        if best is not None and best.best_model_score is not None
        else None,
    }
    if baseline:
        summary["perplexity_ratio_to_baseline"] = summary["val_perplexity"] / baseline["perplexity"]
    return summary
