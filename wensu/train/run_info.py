"""What a run directory records about itself: code, environment, data, and a baseline.

``run_info.json`` holds the git commit of the wensu sources (when they are a checkout), the
versions of the packages that shape the numbers, the dataset manifest's SHA-256, and the unigram
baseline: the perplexity of predicting every masked residue from the training split's residue
frequencies. A model has to beat it to have learned anything beyond composition.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from wensu.alphabet import Alphabet, get_alphabet
from wensu.data.dataset import ShardedDataset
from wensu.data.shards import MANIFEST_NAME, sha256_file

PACKAGES = (
    "wensu",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "numpy",
    "h5py",
    "torchmetrics",
    "einops",
)
_BLOCK = 1 << 24


def git_commit(source: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``source`` (default: wensu), or None."""
    source = source or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def package_versions() -> dict[str, str | None]:
    """Versions of python, the platform, CUDA (if torch has it) and the key packages."""
    versions: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    import torch

    versions["cuda"] = torch.version.cuda
    return versions


def residue_counts(
    dataset_dir: Path, split: str, alphabet: Alphabet, max_residues: int | None = None
) -> np.ndarray:
    """Token counts (length ``len(alphabet)``) over the residues of ``split``.

    Reads shards in manifest order, in blocks, stopping after ``max_residues`` residues.
    """
    counts = np.zeros(256, dtype=np.int64)
    budget = max_residues if max_residues is not None else math.inf
    records = ShardedDataset(dataset_dir, split, verify="none")
    for path in records.shard_paths:
        with h5py.File(path, "r") as shard:
            residues = shard["residues"]
            for start in range(0, residues.shape[0], _BLOCK):
                if budget <= 0:
                    break
                block = residues[start : start + int(min(_BLOCK, budget))]
                counts += np.bincount(block, minlength=256)
                budget -= block.size
    tokens = np.zeros(len(alphabet), dtype=np.int64)
    present = np.flatnonzero(counts)
    np.add.at(tokens, alphabet.encode_bytes(present.astype(np.uint8)), counts[present])
    return tokens


def unigram_baseline(
    dataset_dir: Path,
    train_split: str = "train",
    eval_split: str = "valid",
    max_residues: int | None = 50_000_000,
    alphabet: Alphabet | None = None,
) -> dict[str, float]:
    """Cross-entropy and perplexity of the training residue frequencies on ``eval_split``.

    Every residue token gets one pseudo-count (add-one smoothing), so a residue absent from
    training still has a finite cost. Masked positions are a uniform sample of residues, so
    this is the expected masked-LM loss of a model that ignores context.
    """
    alphabet = alphabet or get_alphabet()
    train = residue_counts(Path(dataset_dir), train_split, alphabet, max_residues)
    evaluation = residue_counts(Path(dataset_dir), eval_split, alphabet, max_residues)
    residue_tokens = np.ones(len(alphabet), dtype=bool)
    residue_tokens[alphabet.special_indices] = False
    smoothed = train.astype(np.float64) + residue_tokens
    probabilities = smoothed / smoothed.sum()
    total = evaluation.sum()
    if total == 0:
        raise ValueError(f"{dataset_dir}: split {eval_split!r} has no residues")
    loss = float(
        -(evaluation[residue_tokens] * np.log(probabilities[residue_tokens])).sum() / total
    )
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "train_residues": int(train.sum()),
        "eval_residues": int(total),
    }


def manifest_sha256(dataset_dir: Path) -> str:
    """SHA-256 of the dataset's ``manifest.json`` bytes (which list every shard's SHA-256)."""
    return sha256_file(Path(dataset_dir) / MANIFEST_NAME)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
