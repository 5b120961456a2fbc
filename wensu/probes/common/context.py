"""What every probe runner receives (models, data location, seed, output) and shared helpers:
deterministic subsets, input hashes, software versions and atomic JSON writes."""

from __future__ import annotations

import json
import os
import platform
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from wensu.data.shards import sha256_file
from wensu.probes.common.features import EncoderFeatures

T = TypeVar("T")

MODEL = "model"
RANDOM_INIT = "random-init"


@dataclass
class EvalContext:
    """The checkpoint's features plus its random-init twin, and where/how to run."""

    encoders: list[EncoderFeatures]  # [model, random-init]
    data_dir: Path
    output_dir: Path
    seed: int = 0
    fast: bool = False
    show_progress: bool = True
    checkpoint: dict[str, Any] = field(default_factory=dict)  # path, sha256, config
    # Cell-model checkpoints: wensu.probes.cells.context.CellModels (encoders is then empty).
    cells: Any = None
    data_option: str | None = None  # data_dir= as configured (None: $WENSU_DATA, else the cache)
    fetch: bool = True  # download a missing built-in set on first use

    @property
    def window(self) -> int | None:
        return self.encoders[0].window


def config_fields(cfg: Any) -> dict[str, Any]:
    """The :class:`EvalContext` fields read straight from the ``wensu-eval`` config, the same
    for protein and cell checkpoints."""
    return {
        "data_option": cfg.data_dir,
        "fetch": bool(cfg.get("fetch", True)),
        "seed": int(cfg.seed),
        "fast": str(cfg.subset) == "fast",
        "show_progress": bool(cfg.progress),
    }


@dataclass
class ProbeResult:
    """What a probe reports: table rows, details for metrics.json, inputs, figures, notes."""

    probe: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_row(self, task: str, metric: str, values: dict[str, float], head: str = "") -> None:
        self.rows.append({"task": task, "head": head, "metric": metric, "values": values})


def stable_subset(items: Sequence[T], limit: int | None, key: Callable[[T], str]) -> list[T]:
    """Up to ``limit`` items in CRC32-of-key order: a fixed pseudo-random subset, order-free."""
    if limit is None or limit >= len(items):
        return list(items)
    return sorted(items, key=lambda item: zlib.crc32(key(item).encode()))[:limit]


@cache
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))


def input_hashes(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """[{path, sha256, bytes}] of each distinct input file, in the given order."""
    out, seen = [], set()
    for path in paths:
        path = Path(path)
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        stat = path.stat()
        digest = _file_hash(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        out.append({"path": str(path), "sha256": digest, "bytes": stat.st_size})
    return out


def versions() -> dict[str, str]:
    """Versions of python and the libraries the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("wensu", "torch", "numpy", "scikit-learn", "biopython"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic JSON write (temporary file, fsync, rename); key order kept (table columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
