"""Stage d (training): esm2_8m pretraining for a fixed time on the carried proteome shards.

``wensu-train experiment=esm2_8m_proteomes`` (ESM-2 8M, dense attention, 1,024-token crops,
64k tokens per batch, bf16 on one GPU) run through :func:`wensu.train.run.train` with
``trainer.max_time`` set, so it trains for ``train_seconds``. The schedule horizon, warm-up and
validation interval come from the step rate the throughput stage measured for this shape (a
fixed guess when that stage did not run). Validation perplexity is logged ~``validations``
times; it is reported against tokens seen and against the unigram baseline of the same split.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

from common import StageRecord, compose, pyplot, save_figure, train_overrides


def expected_tokens_per_s(spec: dict) -> tuple[float, str]:
    """wensu's eager tokens/s for esm2_8m from the throughput stage, else a fixed guess."""
    try:
        record = json.loads(Path(spec["throughput_json"]).read_text())
        row = record["models"]["esm2_8m"]["variants"]["wensu_packed"]
        if row.get("status") == "ok":
            return float(row["tokens_per_s"]), "throughput stage (esm2_8m, wensu_packed)"
    except (OSError, KeyError, ValueError):
        pass
    return float(spec["fallback_tokens_per_s"]), "fixed guess (throughput stage not available)"


def overrides(spec: dict, steps: int) -> list[str]:
    seconds = int(spec["train_seconds"])
    every = max(steps // spec["validations"], 1)
    out = train_overrides(spec, "gpu_pretrain") + [
        f"++trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
        f"trainer.max_steps={steps * 3}",
        f"schedule.total_steps={steps}",
        f"schedule.warmup_steps={max(steps // 20, 1)}",
        f"optim.lr={spec['lr']}",
        f"trainer.val_check_interval={every}",
        f"trainer.limit_val_batches={spec['limit_val_batches']}",
        f"trainer.log_every_n_steps={max(every // 5, 1)}",
        f"data.max_tokens={spec['max_tokens']}",
        f"data.crop_length={spec['crop_length']}",
        f"data.num_workers={spec['num_workers']}",
        "logging.loss_curve=false",
    ]
    if spec["dry_run"]:
        return [f"model={spec['model']}", "trainer=cpu", *out]
    return ["experiment=esm2_8m_proteomes", *out]


def validation_curve(run_dir: Path, tokens_per_step: float) -> list[dict]:
    """(step, tokens seen, validation perplexity) from the run's CSV log."""
    points = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("val/perplexity"):
                    step = int(float(row["step"]))
                    points.append({"step": step, "tokens": int(step * tokens_per_step),
                                   "val_perplexity": float(row["val/perplexity"])})  # fmt: skip
    return points


def plot(curve: list[dict], summary: dict, path) -> str:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    if curve:
        axis.plot([p["tokens"] for p in curve], [p["val_perplexity"] for p in curve], "o-",
                  label="validation (esm2_8m)")  # fmt: skip
    if summary.get("unigram_baseline_perplexity"):
        axis.axhline(summary["unigram_baseline_perplexity"], color="grey", linestyle="--",
                     label="unigram baseline")  # fmt: skip
    axis.set_xlabel("training tokens seen")
    axis.set_ylabel("masked-LM perplexity")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(figure, path)


def run(spec: dict, record: StageRecord) -> None:
    from wensu.train.run import train

    rate, source = expected_tokens_per_s(spec)
    steps = max(int(spec["train_seconds"] * rate / spec["max_tokens"]), 4)
    run_dir = Path(spec["scratch"]) / "pretrain_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg_overrides = overrides(spec, steps)
    _, settings = compose("train", cfg_overrides)
    record.update(
        command="wensu-train " + " ".join(cfg_overrides),
        expected_tokens_per_s=rate,
        expected_rate_source=source,
        schedule_steps=steps,
        train_seconds_limit=spec["train_seconds"],
        model=settings["model"],
    )
    record.flush()
    summary = train(settings, run_dir)
    tokens_per_step = summary["tokens_seen"] / max(summary["global_step"], 1)
    curve = validation_curve(run_dir, tokens_per_step)
    final = {"step": summary["global_step"], "tokens": summary["tokens_seen"],
             "val_perplexity": summary["val_perplexity"]}  # fmt: skip
    if not curve or curve[-1]["step"] != final["step"]:
        curve.append(final)
    keep = ("val_perplexity", "val_loss", "val_accuracy", "unigram_baseline_perplexity",
            "perplexity_ratio_to_baseline", "tokens_seen", "global_step", "train_seconds",
            "tokens_per_s", "wall_seconds_this_session")  # fmt: skip
    record.update(
        summary={k: summary.get(k) for k in keep},
        below_unigram=bool(
            math.isfinite(summary["val_perplexity"])
            and summary["val_perplexity"] < (summary["unigram_baseline_perplexity"] or 0)
        ),
        curve=curve,
        checkpoint=summary["last_checkpoint"],
    )
    record["figure"] = plot(curve, summary, spec["figure_dir"] / "pretrain.png")
