"""Run settings every ``wensu-eval`` context needs, protein or cell: where the shared data lives,
which device to run on, and how many CPU threads to use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from wensu.probes.common.errors import EvalConfigError


def resolve_data_dir(value: str | None, required: str = "structure") -> Path:
    """The shared data root holding ``required/``: the option, else $WENSU_SHARED_DATA, else
    ../shared/data next to the working directory or the checkout."""
    candidates = [Path(value)] if value else []
    if not value:
        if os.environ.get("WENSU_SHARED_DATA"):
            candidates.append(Path(os.environ["WENSU_SHARED_DATA"]))
        candidates.append(Path.cwd().parent / "shared" / "data")
        # <checkout>/wensu/probes/common/settings.py -> <checkout>/../shared/data
        candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    for path in candidates:
        if (path / required).is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise EvalConfigError(
        f"data_dir: no shared data folder (with {required}/) found; tried {tried}"
    )


def set_cpu_threads(value: Any) -> int:
    """Apply ``cpu_threads``: an integer, or ``auto`` = 1 thread when the CPU is already busy
    (1-minute load average >= cores - 1), else torch's default. On a shared, busy CPU the
    intra-op pool waits for cores more than it computes: measured 2-3x slower with 2 threads."""
    if value == "auto":
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 1
        value = 1 if busy else torch.get_num_threads()
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise EvalConfigError(
            f"cpu_threads must be 'auto' or a positive integer, got {value!r}"
        ) from None
    if threads < 1:
        raise EvalConfigError(f"cpu_threads must be 'auto' or a positive integer, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def resolve_device(value: str) -> str:
    """``auto`` -> cuda when available, else cpu; a cuda device without CUDA is an error."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise EvalConfigError(f"device={value}: CUDA is not available")
    return value
