"""Longest context that trains, and memory per token: doubling search over sequence length.

For each model (conf/model/<name>.yaml, default esm2_8m and esm2_35m), attention backend
(window=256, num_global=1 for the windowed ones, as conf/attention/chunked.yaml) and
activation-checkpointing setting (`--checkpointing off on`), one training step on a single
sequence of L tokens exactly as `wensu-train` takes it: `MaskedLMModule.masked_lm_step`
(15% masking, encoder, LM head + cross-entropy in token chunks over the masked positions),
then backward (no optimizer: its state does not depend on L). L doubles from `--start` until
a step fails or a stop rule applies; every attempt runs in a fresh subprocess. Each row
reports the peak and the peak per token (KB/token = peak bytes / L / 1024).

RAM cap (CPU): the worker may map at most `--mem-cap-gb` of new address space
(RLIMIT_AS above its size before the step), so a step that would need more fails with an
allocation error ("oom"); its measured peak resident memory is reported too. On CUDA the
cap is the GPU itself (torch.cuda.OutOfMemoryError) and peaks are max_memory_allocated.

Stop rules, recorded per row: a failure (oom / timeout / error), a predicted step time above
`--time-cap` (extrapolated from the last length: quadratic for dense, linear otherwise), or
the time share spent (each model/backend gets an equal share of what is left of `--budget`).
Where the search stops before the memory cap, the length at which the peak would reach the
cap is also given, extrapolated from the last two measured peaks (`projected_tokens_at_cap`,
with the fitted growth exponent). CPU flex is not run: PyTorch has no FlexAttention backward
on CPU, and wensu's flex backend trains through the chunked backend there.

    nice .venv/bin/python -P experiments/benchmarks/longest_context.py            # CPU, ~5 min
    nice .venv/bin/python -P experiments/benchmarks/longest_context.py --backends chunked \
        --start 8192 --max-length 262144 --model-max-length esm2_35m=32768 \
        --mem-cap-gb 12 --time-cap 1200 --budget 7200
    .venv/bin/python -P experiments/benchmarks/longest_context.py --device cuda --budget 1800
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling module, also under `-P`
from attention_scaling import (  # noqa: E402
    DEFAULT_OUT,
    REPO,
    PeakMemory,
    environment,
    is_out_of_memory,
    limit_new_address_space,
    resolve_device,
    run_worker,
    synchronize,
)

MACHINE_LOAD_NOTE = (
    "shared machine: 2 CPU cores and 24 GB RAM used by ~7 concurrent jobs while this ran; "
    "step times are inflated and noisy, memory peaks are per process"
)


def train_step(spec: dict) -> dict:
    """One fwd+bwd training step on spec["seq_len"] tokens (runs inside the worker)."""
    from omegaconf import OmegaConf

    from wensu.train.module import MaskedLMModule

    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    path = REPO / "conf" / "model" / f"{spec['model']}.yaml"
    model_cfg = OmegaConf.to_container(OmegaConf.load(path))
    model_cfg["attention"] = spec["attention"]
    model_cfg["activation_checkpointing"] = spec["checkpointing"]
    torch.manual_seed(0)
    module = MaskedLMModule(model=model_cfg).to(device).train()
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(seq_len: int) -> float:
        tokens = torch.randint(4, 24, (1, seq_len), device=device, generator=generator)
        tokens[0, 0], tokens[0, -1] = 0, 2
        with autocast:
            loss = module.masked_lm_step(tokens, generator)["loss"]
        loss.backward()
        module.zero_grad(set_to_none=True)
        synchronize(device)
        return loss.item()

    if device.type == "cpu":
        limit_new_address_space(int(spec["mem_cap_gb"] * 1024**3))
    try:
        step(128)  # warm-up: first-call kernel and allocator set-up is not part of the step
        start = time.perf_counter()
        with PeakMemory(device) as memory:
            loss = step(spec["seq_len"])
        seconds = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - recorded as the outcome of this length
        if is_out_of_memory(error):
            return {"status": "oom", "detail": str(error).splitlines()[0][:200]}
        raise
    return {
        "status": "ok",
        "seconds": seconds,
        "peak_bytes": memory.peak,
        "kb_per_token": round(memory.peak / spec["seq_len"] / 1024, 2),
        "loss": loss,
    }


def projected_tokens(rows: list[dict], cap_bytes: float) -> dict | None:
    """Length at which the peak would reach the cap, from a power law through the last two
    measured lengths (an extrapolation, labelled as such in the results)."""
    if len(rows) < 2 or cap_bytes <= 0:
        return None
    (short, long) = sorted(rows, key=lambda r: r["seq_len"])[-2:]
    if min(short["peak_bytes"], long["peak_bytes"]) <= 0:
        return None
    exponent = math.log(long["peak_bytes"] / short["peak_bytes"]) / math.log(
        long["seq_len"] / short["seq_len"]
    )
    if exponent <= 0:
        return None
    tokens = long["seq_len"] * (cap_bytes / long["peak_bytes"]) ** (1 / exponent)
    return {"tokens": int(tokens), "peak_growth_exponent": round(exponent, 2)}


def select(results: list[dict], model: str, backend: str, checkpointing: bool) -> list[dict]:
    """The successful rows of one (model, backend, checkpointing) run."""
    key = (model, backend, checkpointing, "ok")
    return [
        r
        for r in results
        if (r["model"], r["backend"], r["activation_checkpointing"], r["status"]) == key
    ]


def doubling(start: int, stop: int) -> list[int]:
    return [start << i for i in range(64) if start << i <= stop]


def summarize(rows: list[dict], stopped: str, cap_bytes: float) -> dict:
    """Longest length, KB/token per length and its spread from 8,192 tokens up."""
    per_token = {str(r["seq_len"]): r["kb_per_token"] for r in rows}
    long_rows = [r["kb_per_token"] for r in rows if r["seq_len"] >= 8192]
    return {
        "longest_trained_tokens": max((r["seq_len"] for r in rows), default=None),
        "peak_gb": {str(r["seq_len"]): round(r["peak_bytes"] / 1024**3, 3) for r in rows},
        "kb_per_token": per_token,
        "kb_per_token_max_over_min_from_8192": round(max(long_rows) / min(long_rows), 3)
        if len(long_rows) > 1
        else None,
        "stopped_because": stopped,
        "projected_tokens_at_cap": projected_tokens(rows, cap_bytes),
    }


def goals(summary: dict) -> dict:
    """The issue's targets, checked against the measured rows (None where not measured)."""
    lean = summary.get("esm2_8m/chunked/checkpointing_on", {})
    peak_131k = lean.get("peak_gb", {}).get("131072")
    kb_131k = lean.get("kb_per_token", {}).get("131072")
    spread = lean.get("kb_per_token_max_over_min_from_8192")
    larger = summary.get("esm2_35m/chunked/checkpointing_on", {})
    return {
        "esm2_8m_131072_tokens_peak_gb": peak_131k,
        "esm2_8m_131072_under_6_gb": None if peak_131k is None else peak_131k < 6,
        "esm2_8m_131072_kb_per_token": kb_131k,
        "esm2_8m_at_most_46_kb_per_token": None if kb_131k is None else kb_131k <= 46,
        "esm2_8m_262144_measured": "262144" in lean.get("kb_per_token", {}),
        "esm2_8m_kb_per_token_spread_from_8192": spread,
        "esm2_8m_per_token_flat_within_1_3x": None if spread is None else spread <= 1.3,
        "esm2_35m_longest_trained_tokens": larger.get("longest_trained_tokens"),
        "esm2_35m_trains_32768": None
        if not larger
        else (larger.get("longest_trained_tokens") or 0) >= 32768,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--models", nargs="+", default=["esm2_8m", "esm2_35m"])
    parser.add_argument("--backends", nargs="+", default=None, help="default: all that train")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--num-global", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--start", type=int, default=1024)
    parser.add_argument("--max-length", type=int, default=1 << 21)
    parser.add_argument(
        "--model-max-length", nargs="*", default=[], help="per-model caps, e.g. esm2_35m=32768"
    )
    parser.add_argument("--lengths", nargs="*", type=int, help="explicit lengths (no doubling)")
    parser.add_argument(
        "--off-max-length", type=int, default=1 << 21, help="cap without checkpointing"
    )
    parser.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads per worker")
    parser.add_argument("--mem-cap-gb", type=float, default=8.0)
    parser.add_argument("--time-cap", type=float, default=40.0, help="max predicted s per step")
    parser.add_argument("--budget", type=float, default=300.0, help="total seconds to spend")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(train_step(json.loads(args.worker))))
        return

    device = resolve_device(args.device)
    backends = args.backends or (
        ["dense", "chunked", "flex"] if device.type == "cuda" else ["dense", "chunked"]
    )
    if device.type == "cuda":
        cap_bytes = torch.cuda.get_device_properties(device).total_memory
    else:
        cap_bytes = args.mem_cap_gb * 1024**3
    max_lengths = dict(item.split("=") for item in args.model_max_length)
    runs = [
        (model, backend, checkpointing == "on")
        for model in args.models
        for backend in backends
        for checkpointing in args.checkpointing
    ]
    began = time.monotonic()
    results: list[dict] = []
    summary: dict[str, dict] = {}

    def write_report() -> Path:
        """Results so far (rewritten after every row, so an interrupted search keeps them)."""
        report = {
            "benchmark": "longest_context",
            **environment(device),
            "machine_load": MACHINE_LOAD_NOTE if device.type == "cpu" else None,
            "setup": {
                "what": "one training step as wensu-train takes it (MaskedLMModule.masked_lm_step: "
                "15% masking, encoder, chunked LM head + cross-entropy; then backward; no "
                "optimizer), batch 1, random residues",
                "window": args.window,
                "num_global": args.num_global,
                "block_size": args.block_size,
                "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
                "activation_checkpointing": args.checkpointing,
                "cpu_threads_per_worker": args.threads if device.type == "cpu" else None,
                "ram_cap_gb": args.mem_cap_gb if device.type == "cpu" else "GPU memory",
                "memory": "peak RSS above the pre-step RSS (VmHWM)"
                if device.type == "cpu"
                else "CUDA max_memory_allocated",
                "time_cap_s": args.time_cap,
                "budget_s": args.budget,
                "doubling_from": args.start,
                "cpu_flex": None
                if device.type == "cuda"
                else "not run: no FlexAttention backward on CPU; flex trains via chunked on CPU",
            },
            "summary": summary,
            "goals": goals(summary),
            "results": results,
        }
        out = args.out or DEFAULT_OUT / f"longest_context_{device.type}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        return out

    for done, (model, backend, checkpointing) in enumerate(runs):
        label = f"{model}/{backend}/checkpointing_{'on' if checkpointing else 'off'}"
        window = None if backend == "dense" else args.window
        attention = {
            "backend": backend,
            "window": window,
            "num_global": args.num_global,
            "block_size": args.block_size,
        }
        # Each run may use an equal share of what is left of the budget.
        share = (args.budget - (time.monotonic() - began)) / (len(runs) - done)
        share_began = time.monotonic()
        max_length = int(max_lengths.get(model, args.max_length))
        if not checkpointing:
            max_length = min(max_length, args.off_max_length)
        lengths = [n for n in args.lengths or doubling(args.start, max_length) if n <= max_length]
        last, reason = None, f"reached max length {max_length}"
        for seq_len in lengths:
            if time.monotonic() - share_began > share:
                reason = f"time share of {share:.0f} s (of --budget {args.budget:.0f} s) spent"
                break
            if last is not None:
                power = 2 if backend == "dense" else 1
                guess = last["seconds"] * (seq_len / last["seq_len"]) ** power
                if guess > args.time_cap:
                    reason = f"next length {seq_len}: predicted {guess:.0f} s > time cap"
                    break
            spec = {
                "device": str(device),
                "model": model,
                "attention": attention,
                "checkpointing": checkpointing,
                "seq_len": seq_len,
                "mem_cap_gb": args.mem_cap_gb,
                "threads": args.threads if device.type == "cpu" else None,
            }
            row = {
                "model": model,
                "backend": backend,
                "window": window,
                "activation_checkpointing": checkpointing,
                "seq_len": seq_len,
            }
            row |= run_worker(Path(__file__), spec, timeout=120 + 3 * args.time_cap)
            results.append(row)
            print(json.dumps(row), flush=True)
            summary[label] = summarize(
                select(results, model, backend, checkpointing), "", cap_bytes
            )
            write_report()
            if row["status"] != "ok":
                reason = f"{row['status']} at {seq_len} tokens"
                break
            last = row
        summary[label] = summarize(
            select(results, model, backend, checkpointing), reason, cap_bytes
        )

    out = write_report()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
