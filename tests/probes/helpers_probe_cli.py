"""Shared helpers for the ``wensu-eval probe=...`` CLI tests: a tiny checkpoint and the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from wensu.checkpoint import save_encoder_checkpoint
from wensu.model import Encoder, EncoderConfig

SCRIPT = Path(sys.executable).with_name("wensu-eval")


def tiny_checkpoint(path: Path, seed: int, max_length: int) -> Path:
    """A 2-layer, 16-dim random encoder (seeded) saved as a wensu checkpoint at ``path``."""
    torch.manual_seed(seed)
    encoder = Encoder(EncoderConfig(num_layers=2, d_model=16, num_heads=2, ffn_dim=32))
    return save_encoder_checkpoint(encoder, path, {"max_length": max_length})


def probe_cli_args(
    checkpoint: Path, probe: str, data: Path, *overrides: str, output: str = "out"
) -> list[str]:
    """``wensu-eval`` arguments for one probe on the fast subset, single-threaded, quiet."""
    return [
        f"checkpoint={checkpoint}",
        f"probe={probe}",
        "subset=fast",
        f"output={output}",
        f"data_dir={data}",
        "progress=false",
        "cpu_threads=1",
        *overrides,
    ]


def run_eval(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Run the ``wensu-eval`` console script as a user would, from ``cwd``."""
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)
