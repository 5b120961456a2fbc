"""Preprocessing at growing input size: wall time, throughput and peak memory, in one run.

For each size, a deterministic UniParc-like FASTA (``uniparc_like.py``: UniParc headers,
log-normal lengths with median 290, 10% exact duplicates) is generated under ``--scratch``
(never in the repository), then each variant runs as its own process on it:

- ``local_1``: ``wensu-preprocess`` with ``num_workers=1``;
- ``local_2``: ``num_workers=2``;
- ``ray_2``: ``executor=ray`` on a local Ray instance with 2 CPUs;
- ``biopython``: the anchor, ``Bio.SeqIO.parse`` + h5py shards of 10,000 records (no
  validation, deduplication or splits).

Memory is sampled every 0.1 s from /proc over the variant's whole process tree (driver, pool
workers, Ray's own processes): ``peak_rss_mb`` is the largest single process (what
``memory_limit`` bounds), ``peak_tree_rss_mb`` the largest sum (shared pages, e.g. Ray's object
store, are counted once per process). The machine is shared with other jobs: load averages are
recorded, and wall times include waiting for the CPU.

    nice python experiments/benchmarks/preprocess_scale.py --sizes 200000 2000000 20000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUT = REPO / "experiments" / "results" / "preprocess_scale.json"
VARIANTS = ("local_1", "local_2", "ray_2", "biopython")
SHARD_RECORDS = 10_000


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak RSS of the largest process and of the whole tree under ``pid``."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_tree = pid, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sizes = [_rss_kb(p) for p in _tree(self.pid)]
            if sizes:
                self.peak = max(self.peak, max(sizes))
                self.peak_tree = max(self.peak_tree, sum(sizes))
            self.stop.wait(0.1)


def run_variant(variant: str, fasta: Path, output: Path, settings: dict) -> dict:
    """Run one variant as a child process; wall time, CPU time and memory."""
    command = [sys.executable, "-P", __file__, "--run", variant, "--input", str(fasta),
               "--run-output", str(output), "--settings", json.dumps(settings)]  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = MemorySampler(child.pid)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    stdout, stderr = child.communicate()
    if status != 0:
        raise SystemExit(f"{variant} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    size = fasta.stat().st_size
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "mb_per_s": round(size / 1e6 / seconds, 2),
        "records_per_s": round(result["records"] / seconds, 1),
        "peak_rss_mb": round(sampler.peak / 1024, 1),
        "peak_tree_rss_mb": round(sampler.peak_tree / 1024, 1),
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        **result,
    }


def _child(variant: str, fasta: Path, output: Path, settings: dict) -> None:
    """In the child process: run the variant, print a JSON line with its counts."""
    if variant == "biopython":
        sys.path.insert(0, str(HERE))
        from preprocess_throughput import biopython_baseline

        print(json.dumps({"records": biopython_baseline([fasta], output)}))
        return
    from wensu.preprocessing import run_preprocess

    settings = dict(settings, num_workers=2 if variant == "local_2" else 1)
    if variant == "ray_2":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        settings["executor"] = "ray"
    summary = run_preprocess(input=[str(fasta)], output=str(output), progress=False,
                             shard_size_records=SHARD_RECORDS, **settings)  # fmt: skip
    counts = summary["counts"]
    print(json.dumps({"records": counts["read"], "written": counts["written"],
                      "duplicates": counts["duplicates"],
                      "stage_seconds": summary.get("stage_seconds"),
                      "driver_peak_rss_mb_after_stage": summary.get(
                          "driver_peak_rss_mb_after_stage"),
                      "dedup_partitions": summary.get("partitions"),
                      "fingerprint": json.loads((output / "manifest.json").read_text())[
                          "fingerprint"]}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    # The largest size can take hours on a shared 2-core machine: run only these there.
    parser.add_argument("--largest-variants", nargs="+", choices=VARIANTS)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/wensu-scale"))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-inputs", action="store_true")
    # Small enough that 2 M records already fill it, so larger inputs show that memory is
    # bounded by this setting and not by the input (the default 2GB fits ~18 M keys).
    parser.add_argument("--memory-limit", default="256MB")
    parser.add_argument("--chunk-bytes", type=int, default=16 << 20)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--run", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _child(args.run, args.input, args.run_output, json.loads(args.settings))
        return

    sys.path.insert(0, str(HERE))
    from uniparc_like import generate

    args.scratch.mkdir(parents=True, exist_ok=True)
    settings = {"memory_limit": args.memory_limit, "chunk_bytes": args.chunk_bytes}
    report = {
        "benchmark": "preprocess_scale",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": {
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "note": "shared machine: several other jobs ran at the same time (see load "
            "averages); wall times include waiting for a CPU, so 2-worker scaling is distorted",
        },
        "versions": {
            "python": platform.python_version(),
            "wensu": version("wensu"),
            "ray": _version("ray"),
            "biopython": version("biopython"),
        },  # fmt: skip
        "generator": "experiments/benchmarks/uniparc_like.py (seed 0)",
        "wensu_settings": settings,
        "sizes": {},
    }
    for records in args.sizes:
        fasta = args.scratch / f"uniparc_like_{records}.fasta"
        if not fasta.exists():
            print(f"generating {fasta}", file=sys.stderr)
            generate(fasta, records)
        entry = {"records": records, "fasta_bytes": fasta.stat().st_size, "variants": {}}
        variants = args.variants
        if args.largest_variants and records == max(args.sizes):
            variants = args.largest_variants
        for variant in variants:
            output = args.scratch / f"out-{records}-{variant}"
            shutil.rmtree(output, ignore_errors=True)
            load = os.getloadavg()
            result = run_variant(variant, fasta, output, settings)
            result["load_average_at_start"] = [round(x, 2) for x in load]
            entry["variants"][variant] = result
            shutil.rmtree(output, ignore_errors=True)
            print(f"{records:>11,} {variant:10s} {result['seconds']:8.1f} s "
                  f"{result['mb_per_s']:7.1f} MB/s  peak {result['peak_rss_mb']:7.1f} MB "
                  f"(tree {result['peak_tree_rss_mb']:7.1f} MB)", file=sys.stderr)  # fmt: skip
        fingerprints = {v.get("fingerprint") for k, v in entry["variants"].items()
                        if k != "biopython"}  # fmt: skip
        entry["same_manifest_fingerprint_for_all_wensu_variants"] = len(fingerprints) == 1
        report["sizes"][str(records)] = entry
        if not args.keep_inputs:
            fasta.unlink()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(_with_ratios(report), indent=2) + "\n")
    report["device"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.output.write_text(json.dumps(_with_ratios(report), indent=2) + "\n")


def _version(name: str) -> str | None:
    try:
        return version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _with_ratios(report: dict) -> dict:
    """Memory growth between sizes and throughput per size, for each variant."""
    sizes = sorted(report["sizes"], key=int)
    growth = {}
    for variant in VARIANTS:
        peaks = [(s, report["sizes"][s]["variants"].get(variant)) for s in sizes]
        peaks = [(s, r) for s, r in peaks if r]
        if len(peaks) >= 2:
            (small, a), (large, b) = peaks[-2], peaks[-1]
            growth[variant] = {
                "sizes": [int(small), int(large)],
                "peak_rss_ratio": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
                "throughput_ratio": round(b["mb_per_s"] / a["mb_per_s"], 3),
            }
    report["largest_vs_previous_size"] = growth
    return report


if __name__ == "__main__":
    main()
