"""Shared pieces of the training tests: a small real dataset and the CLI runner."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

from wensu.data.fasta import read_fasta
from wensu.data.shards import shard_name, write_manifest, write_shard
from wensu.resources import default_fasta

WENSU_TRAIN = str(Path(sys.executable).parent / "wensu-train")
# Tiny model and batches: a step takes milliseconds, an epoch ~10 batches on 300 records.
TINY_RUN = [
    "data.max_tokens=4096",
    "data.crop_length=128",
    "data.num_workers=0",
    "schedule.warmup_steps=4",
    "optim.lr=2e-3",
    "threads=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=2",
    "logging.throughput_window=2",
]


def split_of(sequence: bytes) -> str:
    """Deterministic split by sequence hash: ~80% train, 12% valid, 8% test."""
    bucket = int(hashlib.sha256(sequence).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "valid" if bucket < 92 else "test"


def build_dataset(directory: Path, records: int = 300, train_shards: int = 2) -> Path:
    """A wensu dataset dir from the first ``records`` E. coli proteins of the embedded sample."""
    by_split: dict[str, list] = {"train": [], "valid": [], "test": []}
    for record in islice(read_fasta(default_fasta()), records):
        by_split[split_of(record.sequence)].append(record)
    splits = {}
    for split, chosen in by_split.items():
        pieces = train_shards if split == "train" else 1
        size = -(-len(chosen) // pieces)
        shards = [
            write_shard(
                directory / split / shard_name(k),
                [r.id for r in chosen[k * size : (k + 1) * size]],
                [r.sequence for r in chosen[k * size : (k + 1) * size]],
                attrs={"source": "UP000000625 (embedded sample)"},
            )
            for k in range(pieces)
        ]
        splits[split] = {
            "records": len(chosen),
            "residues": sum(len(r.sequence) for r in chosen),
            "shards": shards,
        }
    write_manifest(
        directory,
        {
            "format_version": 1,
            "kind": "proteins",
            "created": "2024-01-01T00:00:00",
            "inputs": [{"path": str(default_fasta()), "sha256": "", "bytes": 0}],
            "config": {"records": records},
            "splits": splits,
            "counts": {"read": records, "written": records, "duplicates": 0, "filtered": 0,
                       "quarantined": 0},
        },
    )  # fmt: skip
    return directory


_CACHE: dict[str, Path] = {}


def shared_dataset(tmp_path_factory) -> Path:
    """One dataset per test session (built on first use)."""
    if "dataset" not in _CACHE:
        _CACHE["dataset"] = build_dataset(tmp_path_factory.mktemp("dataset"))
    return _CACHE["dataset"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``wensu-train`` as a user would, from ``cwd`` (outside the checkout)."""
    return subprocess.run(
        [WENSU_TRAIN, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_train(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``wensu-train`` in the background, output to ``log``."""
    with open(log, "w") as handle:
        return subprocess.Popen(
            [WENSU_TRAIN, *args], cwd=cwd, env=cli_env(), stdout=handle, stderr=subprocess.STDOUT
        )


def kill_once_written(process: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists (it must still be running then)."""
    try:
        deadline = time.monotonic() + timeout
        while not path.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
