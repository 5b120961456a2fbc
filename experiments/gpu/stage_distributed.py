"""Stage e: the distributed configs run: one ``trainer=ddp`` step with ``devices=1`` and one
FSDP step of ``experiment=wensu_1b_fsdp`` at reduced depth, through wensu-train's own code.

Both go through :func:`wensu.train.run.train` with the composed config, so the run directory,
checkpoint (gathered to one file for FSDP) and summary are what a user gets. On a CPU (the dry
run) Lightning's FSDP needs CUDA and wensu-train refuses it before starting; that refusal is
recorded together with the reduced model's parameter count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import StageRecord, compose, device_of, gib, train_overrides

STEPS = 2


def overrides(spec: dict) -> list[str]:
    common = train_overrides(spec, f"gpu_{spec['strategy']}") + [
        f"trainer.max_steps={STEPS}",
        "trainer.devices=1",
        f"trainer.val_check_interval={STEPS}",
        "trainer.limit_val_batches=2",
        "trainer.accumulate_grad_batches=1",
        "schedule.warmup_steps=1",
        "logging.loss_curve=false",
        "data.num_workers=0",
    ]
    if spec["strategy"] == "ddp":
        crop = 128 if spec["dry_run"] else 1024
        return [f"model={spec['model']}", "trainer=ddp", f"data.crop_length={crop}",
                f"data.max_tokens={crop * 8}", *common]  # fmt: skip
    return ["experiment=wensu_1b_fsdp", f"model.num_layers={spec['num_layers']}", *common]


def run(spec: dict, record: StageRecord) -> None:
    import torch

    from wensu.model import build_encoder, count_parameters
    from wensu.train.errors import UsageError
    from wensu.train.run import train

    device = device_of(spec)
    cfg_overrides = overrides(spec)
    _, settings = compose("train", cfg_overrides)
    meta = build_encoder(settings["model"], device="meta")
    record.update(
        command="wensu-train " + " ".join(cfg_overrides),
        strategy=settings["trainer"]["strategy"],
        parameters=count_parameters(meta),
        num_layers=settings["model"]["num_layers"],
    )
    record.flush()
    run_dir = Path(spec["scratch"]) / f"{spec['strategy']}_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        summary = train(settings, run_dir)
    except UsageError as error:
        if device.type == "cuda" or spec["strategy"] != "fsdp":
            raise
        record.update(outcome="refused on CPU, as expected", detail=str(error))
        return
    record.update(
        global_step=summary["global_step"],
        loss=summary["val_loss"],
        step_s=summary["train_seconds"] / max(summary["global_step"], 1),
        world_size=summary["world_size"],
        checkpoint_written=Path(summary["last_checkpoint"]).is_file(),
    )
    if device.type == "cuda":
        record["peak_gib"] = gib(torch.cuda.max_memory_allocated())
