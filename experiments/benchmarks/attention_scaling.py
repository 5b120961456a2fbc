"""Attention scaling: dense vs chunked vs flex, forward+backward time and peak memory vs length.

What is timed (`--scope`): `attention` (default) is the backend alone, mask preparation plus
attention on q, k, v [1, 20, L, 16] (the ESM-2 8M head shape) with gradients into q, k, v;
`layer` is one `wensu.model.layers.SelfAttention` (d_model 320, 20 heads) with its q/k/v/out
projections and rotary, whose cost is the same for every backend. Pattern: window=256,
num_global=1, batch 1. Each (backend, length) runs in a fresh subprocess that times the
forward pass alone (no grad) and forward+backward: the best of at least `--repeats` steps
after one warm-up step (which also compiles flex), and the peak memory of one more step above
the memory held before it (CPU: the resident-set high-water mark, reset through
/proc/self/clear_refs, with glibc returning freed blocks to the OS; CUDA:
torch.cuda.max_memory_allocated).

Lengths whose predicted time (fwd + fwd+bwd) exceeds `--time-cap` (extrapolated from the last:
quadratic for dense, linear otherwise) are recorded as skipped; a step that needs more than
`--mem-cap-gb` of new address space fails with an allocation error and is recorded as "oom".
CPU flex has no backward in PyTorch, so there it is timed forward-only (inference).

The chunked backend is a flash-attention-style autograd function (forward keeps one
log-sum-exp per row, backward recomputes blocks); dense is SDPA with the materialised mask.
CPU workers run with `--threads` intra-op threads (default 1): on a machine shared with other
jobs, every multi-threaded op waits for all its threads to be scheduled, which costs the many
small ops of a blocked computation far more than the few big ones of dense attention.

    nice .venv/bin/python -P experiments/benchmarks/attention_scaling.py          # CPU
    nice .venv/bin/python -P experiments/benchmarks/attention_scaling.py --scope layer
    .venv/bin/python -P experiments/benchmarks/attention_scaling.py --device cuda \\
        --lengths 1024 2048 4096 8192 16384 32768 65536 131072
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "experiments" / "results"


# ----------------------------------------------------------------- measurement helpers


def read_status_bytes(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM, VmSize) in bytes."""
    with open("/proc/self/status") as handle:
        return int(re.search(field + r":\s+(\d+)", handle.read()).group(1)) * 1024


def reset_peak_rss() -> None:
    """Reset VmHWM to the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def limit_new_address_space(cap_bytes: int) -> None:
    """Let this process map at most `cap_bytes` more virtual memory (a hard RAM cap)."""
    limit = read_status_bytes("VmSize") + cap_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class PeakMemory:
    """Peak bytes allocated inside the `with` block above what was held when it began."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            reset_peak_rss()
            self.before = read_status_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.before
        else:
            self.peak = read_status_bytes("VmHWM") - self.before


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MACHINE_LOAD_NOTE = (
    "shared machine: 2 CPU cores used by ~7 concurrent jobs while this ran; absolute times are "
    "inflated and noisy, ratios are measured side by side in the same run"
)


def environment(device: torch.device) -> dict:
    """Device, library versions and the exact command, for the results JSON."""
    import wensu

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": {
            "type": device.type,
            "name": name,
            "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            # The CPU runs share a 2-core machine with other jobs: timings carry that noise.
            "load_average_1m_at_write": round(os.getloadavg()[0], 2),
        },
        "machine_load": MACHINE_LOAD_NOTE if device.type == "cpu" else None,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "wensu": wensu.__version__,
            "cuda": torch.version.cuda,
        },
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_worker(script: Path, spec: dict, timeout: float) -> dict:
    """Run `script --worker <spec>` in a fresh interpreter and parse its last JSON line."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, "-P", str(script), "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"worker exceeded {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"status": "error", "detail": " | ".join(tail)}
    return json.loads(lines[-1])


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError | torch.cuda.OutOfMemoryError) or (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


# ----------------------------------------------------------------------------- worker


def measure_attention(spec: dict) -> dict:
    """Time the backend (or one layer) on `spec["seq_len"]` tokens (runs inside the worker)."""
    from wensu.model.attention import AttentionPattern, build_backend
    from wensu.model.layers import SelfAttention
    from wensu.model.rotary import rotary_tables

    device = torch.device(spec["device"])
    seq_len, d_model, heads = spec["seq_len"], spec["d_model"], spec["heads"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    pattern = AttentionPattern(spec["window"], spec["num_global"])
    backend = build_backend(spec["backend"], pattern, spec["block_size"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if spec["scope"] == "layer":
        layer = SelfAttention(d_model, heads).to(device)
        inputs = [torch.randn(1, seq_len, d_model, device=device, requires_grad=True)]
        rotary = rotary_tables(seq_len, d_model // heads, device=device)

        def forward() -> torch.Tensor:
            return layer(inputs[0], rotary, backend.prepare(None, seq_len, device))[0]

    else:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        shape = (1, heads, seq_len, d_model // heads)
        inputs = [
            torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
        ]

        def forward() -> torch.Tensor:
            return backend.prepare(None, seq_len, device)(*inputs)

    def step(backward: bool) -> None:
        with torch.set_grad_enabled(backward), autocast:
            out = forward()
        if backward:
            out.float().square().mean().backward()
            for tensor in inputs:
                tensor.grad = None
        synchronize(device)

    def measure(backward: bool) -> tuple[float, int]:
        step(backward)  # warm-up (and flex compilation)
        times: list[float] = []
        # At least `repeats` steps, more (up to 10) while they add up to under `min_time`:
        # the minimum of more samples is steadier on a shared machine.
        while len(times) < spec["repeats"] or (sum(times) < spec["min_time"] and len(times) < 10):
            start = time.perf_counter()
            step(backward)
            times.append(time.perf_counter() - start)
        with PeakMemory(device) as memory:
            step(backward)
        return min(times), memory.peak

    if device.type == "cpu":
        limit_new_address_space(int(spec["mem_cap_gb"] * 1024**3))
    try:
        row = {"status": "ok"}
        row["fwd_s"], row["fwd_peak_bytes"] = measure(backward=False)
        if spec["train"]:
            row["fwd_bwd_s"], row["fwd_bwd_peak_bytes"] = measure(backward=True)
    except Exception as error:  # noqa: BLE001 - recorded as the outcome of this length
        if is_out_of_memory(error):
            return {"status": "oom", "detail": str(error).splitlines()[0][:200]}
        raise
    return row


# ----------------------------------------------------------------------------- driver


def predicted_seconds(results: list[dict], backend: str, seq_len: int) -> float | None:
    """Time of one step at seq_len extrapolated from this backend's longest measured length."""
    done = [r for r in results if r["backend"] == backend and r["status"] == "ok"]
    if not done:
        return None
    last = max(done, key=lambda r: r["seq_len"])
    power = 2 if backend == "dense" else 1
    seconds = last.get("fwd_bwd_s", 0.0) + last["fwd_s"]
    return seconds * (seq_len / last["seq_len"]) ** power


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--backends", nargs="+", default=["dense", "chunked", "flex"])
    parser.add_argument(
        "--lengths", nargs="+", type=int, default=[1024, 2048, 4096, 8192, 16384, 32768]
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--num-global", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=320)
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument(
        "--scope",
        choices=["attention", "layer"],
        default="attention",
        help="attention: the backend on q, k, v; layer: SelfAttention with its projections",
    )
    parser.add_argument("--repeats", type=int, default=3, help="minimum timed steps")
    parser.add_argument("--min-time", type=float, default=8.0, help="keep timing up to this")
    parser.add_argument("--time-cap", type=float, default=30.0, help="max predicted s per step")
    parser.add_argument("--mem-cap-gb", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads per worker")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_attention(json.loads(args.worker))))
        return

    device = resolve_device(args.device)
    results: list[dict] = []
    failed_at: dict[str, int] = {}
    # Lengths outer, backends inner: on a shared machine both sides of a ratio see the same load.
    for seq_len in args.lengths:
        for backend in args.backends:
            train = not (backend == "flex" and device.type == "cpu")
            row = {"backend": backend, "seq_len": seq_len, "trains": train}
            guess = predicted_seconds(results, backend, seq_len)
            if backend in failed_at:
                row |= {"status": "skipped", "detail": f"failed at {failed_at[backend]} tokens"}
            elif guess is not None and guess > args.time_cap:
                row |= {
                    "status": "skipped",
                    "detail": f"predicted {guess:.0f} s > time cap {args.time_cap:.0f} s",
                }
            else:
                spec = {
                    "device": str(device),
                    "backend": backend,
                    "seq_len": seq_len,
                    "train": train,
                    "window": args.window,
                    "num_global": args.num_global,
                    "block_size": args.block_size,
                    "d_model": args.d_model,
                    "heads": args.heads,
                    "scope": args.scope,
                    "repeats": args.repeats,
                    "min_time": args.min_time,
                    "mem_cap_gb": args.mem_cap_gb,
                    "threads": args.threads if device.type == "cpu" else None,
                }
                timeout = 180 + (args.repeats + 2) * args.time_cap
                row |= run_worker(Path(__file__), spec, timeout)
                if row["status"] != "ok":
                    failed_at[backend] = seq_len
            results.append(row)
            print(json.dumps(row), flush=True)

    def ok(backend: str, seq_len: int) -> dict | None:
        for r in results:
            if r["backend"] == backend and r["seq_len"] == seq_len and r["status"] == "ok":
                return r
        return None

    ratios: dict[str, dict[str, float]] = {}
    for seq_len in args.lengths:
        dense = ok("dense", seq_len)
        for other in ("chunked", "flex"):
            fast = ok(other, seq_len)
            if not (dense and fast):
                continue
            for mode in ("fwd", "fwd_bwd"):
                if f"{mode}_s" in fast and f"{mode}_s" in dense:
                    name = f"dense_over_{other}_{mode}"
                    ratios.setdefault(f"{name}_time", {})[str(seq_len)] = round(
                        dense[f"{mode}_s"] / fast[f"{mode}_s"], 2
                    )
                    ratios.setdefault(f"{name}_peak_memory", {})[str(seq_len)] = round(
                        dense[f"{mode}_peak_bytes"] / max(fast[f"{mode}_peak_bytes"], 1), 2
                    )
    speedup_8k = ratios.get("dense_over_chunked_fwd_bwd_time", {}).get("8192")
    memory_8k = ratios.get("dense_over_chunked_fwd_bwd_peak_memory", {}).get("8192")
    report = {
        "benchmark": "attention_scaling",
        **environment(device),
        "setup": {
            "what": {
                "attention": "the backend alone: mask preparation + attention on q, k, v",
                "layer": "one SelfAttention: projections, rotary, mask preparation, attention",
            }[args.scope],
            "scope": args.scope,
            "batch": 1,
            "d_model": args.d_model,
            "heads": args.heads,
            "window": args.window,
            "num_global": args.num_global,
            "block_size": args.block_size,
            "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "timing": f"best of >= {args.repeats} steps, up to 10 while under {args.min_time} s",
            "cpu_threads_per_worker": args.threads if device.type == "cpu" else None,
            "time_cap_s": args.time_cap,
            "mem_cap_gb": args.mem_cap_gb,
            "memory": "CUDA max_memory_allocated"
            if device.type == "cuda"
            else "peak RSS above the pre-step RSS (VmHWM)",
        },
        "results": results,
        "ratios": ratios,
        "goal": {
            "chunked_at_least_5x_faster_than_dense_fwd_bwd_at_8192": None
            if speedup_8k is None
            else speedup_8k >= 5,
            "measured_speedup_at_8192": speedup_8k,
            "chunked_at_least_8x_less_peak_memory_than_dense_fwd_bwd_at_8192": None
            if memory_8k is None
            else memory_8k >= 8,
            "measured_memory_ratio_at_8192": memory_8k,
        },
    }
    suffix = "" if args.scope == "attention" else f"_{args.scope}"
    out = args.out or DEFAULT_OUT / f"attention_scaling{suffix}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
