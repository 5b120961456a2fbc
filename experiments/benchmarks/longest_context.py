"""Longest context that trains: doubling search over sequence length per model and backend.

For each model (conf/model/<name>.yaml, default esm2_8m and esm2_35m) and attention backend
(window=256, num_global=1 for the windowed ones, as conf/attention/chunked.yaml), one training
step on a single sequence of L tokens: forward, masked-LM cross-entropy over all positions,
backward (no optimizer: its state does not depend on L). L doubles from `--start` until a step
fails or a stop rule applies; every attempt runs in a fresh subprocess.

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


def train_step(spec: dict) -> dict:
    """One fwd+bwd step of the model on spec["seq_len"] tokens (runs inside the worker)."""
    from omegaconf import OmegaConf

    from wensu.model import EncoderConfig, build_encoder

    device = torch.device(spec["device"])
    path = REPO / "conf" / "model" / f"{spec['model']}.yaml"
    model_cfg = OmegaConf.to_container(OmegaConf.load(path))
    model_cfg["attention"] = spec["attention"]
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig.from_dict(model_cfg, source=str(path))).to(device).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(seq_len: int) -> float:
        tokens = torch.randint(4, 24, (1, seq_len), device=device)
        tokens[0, 0], tokens[0, -1] = 0, 2
        with autocast:
            logits = model(tokens)["logits"]
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)
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
    return {"status": "ok", "seconds": seconds, "peak_bytes": memory.peak, "loss": loss}


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
    combinations, done = len(args.models) * len(backends), 0
    began = time.monotonic()
    results: list[dict] = []
    longest: dict[str, dict[str, int | None]] = {}
    stopped: dict[str, dict[str, str]] = {}
    projected: dict[str, dict[str, dict | None]] = {}
    for model in args.models:
        for backend in backends:
            window = None if backend == "dense" else args.window
            attention = {
                "backend": backend,
                "window": window,
                "num_global": args.num_global,
                "block_size": args.block_size,
            }
            # Each (model, backend) may use an equal share of what is left of the budget.
            share = (args.budget - (time.monotonic() - began)) / (combinations - done)
            share_began = time.monotonic()
            seq_len, last, reason = args.start, None, f"reached --max-length {args.max_length}"
            while seq_len <= args.max_length:
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
                    "seq_len": seq_len,
                    "mem_cap_gb": args.mem_cap_gb,
                }
                row = {"model": model, "backend": backend, "window": window, "seq_len": seq_len}
                row |= run_worker(Path(__file__), spec, timeout=120 + 3 * args.time_cap)
                results.append(row)
                print(json.dumps(row), flush=True)
                if row["status"] != "ok":
                    reason = f"{row['status']} at {seq_len} tokens"
                    break
                last = row
                seq_len *= 2
            longest.setdefault(model, {})[backend] = last["seq_len"] if last else None
            stopped.setdefault(model, {})[backend] = reason
            ok_rows = [r for r in results if r["model"] == model and r["backend"] == backend]
            projected.setdefault(model, {})[backend] = projected_tokens(
                [r for r in ok_rows if r["status"] == "ok"], cap_bytes
            )
            done += 1

    report = {
        "benchmark": "longest_context",
        **environment(device),
        "setup": {
            "what": "one training step (fwd + MLM cross-entropy + bwd, no optimizer), batch 1",
            "window": args.window,
            "num_global": args.num_global,
            "block_size": args.block_size,
            "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "activation_checkpointing": False,
            "ram_cap_gb": args.mem_cap_gb if device.type == "cpu" else "GPU memory",
            "time_cap_s": args.time_cap,
            "budget_s": args.budget,
            "doubling_from": args.start,
            "cpu_flex": None
            if device.type == "cuda"
            else "not run: no FlexAttention backward on CPU; flex trains via chunked on CPU",
        },
        "longest_trained_tokens": longest,
        "stopped_because": stopped,
        "projected_tokens_at_cap": projected,
        "results": results,
    }
    out = args.out or DEFAULT_OUT / f"longest_context_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
