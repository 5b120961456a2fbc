"""GPU truth: every GPU check of wensu in one run, each stage isolated, under one time guard.

    experiments/gpu/run_checks.sh              # on the GPU machine (see README.md beside this)
    experiments/gpu/run_checks.sh --dry-run    # every stage at tiny sizes on the CPU (tested)

Stages (each in its own process; a failing or overrunning stage records its error or its
partial results, and the next stage still runs):

  throughput       a. wensu vs HF EsmForMaskedLM, ESM-2 8M/35M/150M shapes, bf16
  attention        b. flex vs chunked vs SDPA fwd+bwd at 8k/32k/131k, window 256 + global
  longest_context  c. longest esm2_150m training step, with and without activation checkpointing
  pretrain         d. esm2_8m pretraining for a fixed time on the carried proteome shards
  probes           d. SS3 (CB513) and contact probes of that model, random-init and one-hot
  ddp, fsdp        e. one trainer=ddp step (devices=1), one FSDP step of the 1B config, 2 layers

Results: ``$OUT/gpu_checks.json`` (command, GPU, driver, CUDA, torch, every stage) and PNGs,
at most 8 files in all (the device tool returns 8). Scratch files go to ``--scratch``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also under -P
from common import REPO, StageRecord, atomic_json, ensure_wensu_layout  # noqa: E402

STAGE_MODULES = {
    "throughput": "stage_throughput",
    "attention": "stage_attention",
    "longest_context": "stage_longest",
    "pretrain": "stage_pretrain",
    "probes": "stage_probes",
    "ddp": "stage_distributed",
    "fsdp": "stage_distributed",
}
ORDER = tuple(STAGE_MODULES)
# Seconds per stage on the GPU (sum 455: with start-up the run stays under 8 minutes) and in
# the CPU dry run; a stage is never started with less than MIN_STAGE_S left for it. The
# pretraining stage also takes what earlier stages left unused, up to PRETRAIN_MAX_S, and trains
# for its time less PRETRAIN_OVERHEAD_S (start-up, unigram baseline, final validation, saving).
GPU_BUDGET = {
    "throughput": 80,
    "attention": 35,
    "longest_context": 45,
    "pretrain": 185,
    "probes": 55,
    "ddp": 15,
    "fsdp": 40,
}
PRETRAIN_MAX_S = 280
PRETRAIN_OVERHEAD_S = 40
DRY_BUDGET = {name: 60 for name in ORDER}
MIN_STAGE_S = 10
KILL_MARGIN_S = 4  # the child's own deadline ends this long before it is killed


def stage_specs(args: argparse.Namespace, device: str) -> dict[str, dict[str, Any]]:
    """Sizes of every stage: the real ones, or tiny ones for the dry run."""
    dry = args.dry_run
    carry = Path(args.carry).resolve()
    common = {
        "device": device,
        "dry_run": dry,
        "dataset_dir": str(carry / "proteomes"),
        "data_dir": str(carry / "data"),
        "scratch": str(Path(args.scratch).resolve()),
    }
    specs = {
        "throughput": {
            "models": ["esm2_8m", "esm2_35m", "esm2_150m"],
            "compile_models": ["esm2_8m"],
            "length": 64 if dry else 1024,
            "token_budget": 256 if dry else 65536,
            "batches": 4 if dry else 8,
            "warmup": 1 if dry else 2,
            "steps": 2 if dry else 8,
            "max_seconds_per_variant": 2.0 if dry else 4.0,
            "compile_reserve_s": 5 if dry else 40,
            "compile_backend": "aot_eager" if dry else "inductor",
        },
        "attention": {
            "lengths": [128, 256, 512] if dry else [8192, 32768, 131072],
            "window": 16 if dry else 256,
            "num_global": 1,
            "heads": 20,
            "head_dim": 16,
            "repeats": 2 if dry else 5,
            "dense_masked_max": 512 if dry else 32768,
        },
        "longest_context": {
            "model": "esm2_150m",
            "backend": "flex" if device == "cuda" else "chunked",
            "window": 16 if dry else 256,
            "num_global": 1,
            "start": 256 if dry else 16384,
            "max_length": 1024 if dry else 1 << 23,
            "max_step_s": 10 if dry else 25,
        },
        "pretrain": {
            "model": "tiny" if dry else "esm2_8m",
            "train_seconds": 4 if dry else GPU_BUDGET["pretrain"] - PRETRAIN_OVERHEAD_S,
            "max_tokens": 1024 if dry else 65536,
            "crop_length": 128 if dry else 1024,
            "validations": 3 if dry else 10,
            "limit_val_batches": 4 if dry else 60,
            "num_workers": 0 if dry else 6,
            "lr": 1e-3,
            "fallback_tokens_per_s": 2000 if dry else 1.5e6,
        },
        "probes": {
            "ss_max_train": 20 if dry else 3000,
            "ss_max_valid": 8 if dry else 300,
            "ss_max_epochs": 1 if dry else 10,
            "contacts_train_size": 3 if dry else 20,
            "contacts_test_sets": ["ts50"] if dry else ["ts50", "cath103"],
            "contacts_test_limit": 3 if dry else None,
        },
        "ddp": {"model": "tiny" if dry else "esm2_8m", "strategy": "ddp"},
        "fsdp": {"model": "wensu_1b", "strategy": "fsdp", "num_layers": 2},
    }
    for name, spec in specs.items():
        spec.update(common, stage=name)
    return specs


# ----------------------------------------------------------------------------- environment


def _nvidia_smi() -> dict[str, str]:
    query = "name,driver_version,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": str(error)}
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": (done.stderr or "no output").strip()[:200]}
    values = [v.strip() for v in done.stdout.strip().splitlines()[0].split(",")]
    return dict(zip(["name", "driver_version", "memory_total"], values, strict=False))


def _git(*args: str) -> str | None:
    """git's output in the repository, or None where there is no git or no .git (device copy)."""
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def carry_manifest(carry: Path) -> dict[str, Any] | None:
    """prepare_carry's carry.json (it records the commit the carry was built at)."""
    try:
        return json.loads((carry / "carry.json").read_text())
    except (OSError, ValueError):
        return None


def environment(device: str) -> dict[str, Any]:
    """GPU name, driver, CUDA and library versions (without creating a CUDA context here)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {}
    for package in ("torch", "lightning", "transformers", "hydra-core", "omegaconf", "biopython",
                    "numpy", "scikit-learn", "h5py", "triton"):  # fmt: skip
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    commit, dirty = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")
    return {
        "device": device,
        "gpu": _nvidia_smi() if device == "cuda" else None,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "versions": found,
        "git_commit": commit,
        "git_dirty": None if dirty is None else bool(dirty),
    }


# ----------------------------------------------------------------------------- driver


def stage_result(status: str, seconds: float, timeout: float, record: dict) -> dict[str, Any]:
    """The driver's status, seconds and limit first, then what the stage recorded."""
    head = {"status": status, "seconds": seconds, "timeout_s": round(timeout, 1)}
    return {**head, **{k: v for k, v in record.items() if k not in head}}


def run_stage(name: str, spec: dict, timeout: float, scratch: Path) -> dict[str, Any]:
    """Run one stage in a fresh process group; its record, with status and seconds."""
    spec = {**spec, "time_budget_s": max(timeout - KILL_MARGIN_S, 1.0)}
    spec_path = scratch / f"{name}.spec.json"
    record_path = scratch / f"{name}.json"
    log_path = scratch / f"{name}.log"
    atomic_json(spec_path, spec)
    record_path.unlink(missing_ok=True)
    command = [sys.executable, "-P", str(Path(__file__).resolve()), "--stage", name,
               "--spec", str(spec_path), "--record", str(record_path)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if name == "longest_context":
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    seconds = round(time.monotonic() - started, 1)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    if returncode is None:
        status = "timeout"
        record["error"] = f"killed by the time guard after {timeout:.0f} s (partial results kept)"
    elif returncode != 0 or "error" in record:
        status = "error"
        if "error" not in record:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            record["error"] = f"exit status {returncode}: " + " | ".join(tail)
    else:
        status = "ok"
    return stage_result(status, seconds, timeout, record)


def run_here(stage: str, spec: dict, record_path: Path) -> int:
    """Run one stage in this process; an exception becomes the record's error (exit status 1)."""
    import importlib

    ensure_wensu_layout()
    if spec["device"] == "cpu":
        import torch

        # Tiny CPU work on a shared, busy machine: one thread avoids waiting for a second core
        # on every small op (measured: steps several times slower with 2 threads under load).
        torch.set_num_threads(1)
    spec = {**spec, "figure_dir": Path(spec["figure_dir"])}
    record = StageRecord(record_path)
    try:
        importlib.import_module(STAGE_MODULES[stage]).run(spec, record)
    except Exception as error:  # noqa: BLE001 - the driver reports it and goes on
        lines = traceback.format_exception(error)
        record["error"] = " ".join(str(error).split())[:600] or type(error).__name__
        record["traceback_tail"] = "".join(lines[-3:])[-1500:]
        record.flush()
        traceback.print_exc()
        return 1
    record.flush()
    return 0


def run_stage_in_process(name: str, spec: dict, timeout: float, scratch: Path) -> dict[str, Any]:
    """The dry run's mode: no process start-up per stage (imports cost seconds on a busy CPU);
    the time guard is then the stages' own deadlines, not a kill."""
    spec = {**spec, "time_budget_s": max(timeout - KILL_MARGIN_S, 1.0)}
    record_path = scratch / f"{name}.json"
    started = time.monotonic()
    run_here(name, spec, record_path)
    record = json.loads(record_path.read_text())
    status = "error" if "error" in record else "ok"
    return stage_result(status, round(time.monotonic() - started, 1), timeout, record)


def headline(stages: dict[str, dict]) -> dict[str, Any]:
    """The figures the issue's closing note reports, lifted out of the stage records."""
    out: dict[str, Any] = {}
    for name, entry in stages.get("throughput", {}).get("models", {}).items():
        best = entry.get("wensu_best_variant")
        row = entry.get("variants", {}).get(best or "", {})
        out[f"throughput/{name}"] = {
            "wensu_tokens_per_s": row.get("tokens_per_s"),
            "mfu_vs_datasheet": row.get("mfu_vs_datasheet"),
            "ratio_vs_hf_packed": entry.get("ratio_wensu_over_hf_packed"),
            "ratio_vs_hf_padded": entry.get("ratio_wensu_over_hf_padded"),
        }
    if "ratios" in stages.get("attention", {}):
        out["attention_ratios"] = stages["attention"]["ratios"]
    if "longest" in stages.get("longest_context", {}):
        out["longest_context_tokens"] = stages["longest_context"]["longest"]
    pretrain = stages.get("pretrain", {})
    for key in ("val_perplexity", "unigram_baseline_perplexity", "tokens_seen"):
        if key in pretrain.get("summary", {}):
            out[f"pretrain/{key}"] = pretrain["summary"][key]
    if "table" in stages.get("probes", {}):
        out["probes"] = stages["probes"]["table"]
    for name in ("ddp", "fsdp"):
        if name in stages:
            out[name] = {k: stages[name].get(k) for k in ("status", "step_s", "loss")}
    return out


def print_table(payload: dict[str, Any]) -> None:
    print("\n== GPU checks ==")
    for name, stage in payload["stages"].items():
        error = f"  {stage.get('error', '')[:150]}" if stage.get("status") != "ok" else ""
        print(f"{name:16s} {stage.get('status', '?'):8s} {stage.get('seconds', 0):6.1f} s{error}")
    for key, value in payload["headline"].items():
        print(f"  {key}: {json.dumps(value, default=str)[:300]}")


def drive(args: argparse.Namespace) -> int:
    import torch

    started = time.monotonic()
    device = args.device
    if device == "auto":
        device = "cpu" if args.dry_run else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and not args.dry_run and args.device == "auto":
        message = (
            "error: no CUDA GPU visible to torch: the full-size checks need one "
            "(use --dry-run for the CPU check, or --device cpu to insist)"
        )
        print(message, file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    scratch = Path(args.scratch).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    selected = [s for s in ORDER if s in args.stages]
    budgets = DRY_BUDGET if args.dry_run else GPU_BUDGET
    specs = stage_specs(args, device)
    payload: dict[str, Any] = {
        "benchmark": "gpu_checks",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("WENSU_GPU_CHECKS_COMMAND") or shlex.join(sys.argv),
        "dry_run": args.dry_run,
        "isolation": args.isolation,
        "time_budget_s": args.budget,
        "environment": environment(device),
        "carry": carry_manifest(Path(args.carry)),
        "stages": {},
    }
    if args.dry_run:
        payload["note"] = (
            "CPU dry run at tiny sizes: proves every stage runs; its numbers are not measurements "
            "of wensu (and this CPU is shared with other jobs)."
        )
    result_path = out / "gpu_checks.json"
    for index, name in enumerate(selected):
        left = args.budget - (time.monotonic() - started)
        reserve = MIN_STAGE_S * (len(selected) - index - 1)
        timeout = min(budgets[name], left - reserve)
        if timeout < MIN_STAGE_S:
            payload["stages"][name] = {
                "status": "skipped",
                "error": f"global time guard: {left:.0f} s left of {args.budget:.0f} s",
            }
            continue
        spec = {**specs[name], "figure_dir": str(out)}
        if name == "pretrain" and not args.dry_run:
            later = sum(budgets[s] for s in selected[index + 1 :])
            timeout = min(max(left - later, 60), PRETRAIN_MAX_S, left - reserve)
            spec["train_seconds"] = max(int(timeout - PRETRAIN_OVERHEAD_S), 20)
        spec["throughput_json"] = str(scratch / "throughput.json")
        spec["pretrain_json"] = str(scratch / "pretrain.json")
        print(f"[gpu-checks] {name}: up to {timeout:.0f} s", flush=True)
        runner = run_stage if args.isolation == "process" else run_stage_in_process
        payload["stages"][name] = runner(name, spec, timeout, scratch)
        print(f"[gpu-checks] {name}: {payload['stages'][name]['status']} "
              f"in {payload['stages'][name]['seconds']} s", flush=True)  # fmt: skip
        log = scratch / f"{name}.log"
        if payload["stages"][name]["status"] != "ok" and log.is_file():
            # Stage logs stay in the scratch folder (only 8 files come back): show the end.
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print("\n".join(f"    | {line}" for line in tail), flush=True)
        payload["headline"] = headline(payload["stages"])
        payload["seconds"] = round(time.monotonic() - started, 1)
        atomic_json(result_path, payload)
    payload["headline"] = headline(payload["stages"])
    payload["seconds"] = round(time.monotonic() - started, 1)
    atomic_json(result_path, payload)
    print_table(payload)
    print(f"wrote {result_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_checks_out")
    parser.add_argument("--scratch", default=None, help="stage JSON/logs (default: $OUT/../)")
    parser.add_argument("--carry", default=str(REPO / "gpu_carry"), help="prepare_carry.sh output")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all stages")
    parser.add_argument("--stages", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument(
        "--isolation", choices=["process", "none"], default=None,
        help="process: each stage in its own process (default on the GPU); none: in this one",
    )  # fmt: skip
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return run_here(args.stage, json.loads(args.spec.read_text()), args.record)
    if args.isolation is None:
        args.isolation = "none" if args.dry_run else "process"
    if args.budget is None:
        args.budget = 150.0 if args.dry_run else 455.0
    if args.scratch is None:
        args.scratch = str(Path(tempfile.gettempdir()) / "wensu_gpu_checks_scratch")
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
