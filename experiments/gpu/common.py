"""Shared pieces of the GPU checks: the stage record, timing, peak memory, model shapes, FLOPs.

Every stage runs in its own process (see ``checks.py``) and writes its results through a
:class:`StageRecord`, which rewrites the stage's JSON atomically after every measurement, so a
stage killed by the time guard still leaves everything it measured so far.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Dense bf16 tensor-core peak of the H100/H200 SXM (NVIDIA datasheet, without sparsity). MFU is
# given against this number and against the bf16 matmul rate measured at the start of the run.
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}
DEFAULT_BF16_TFLOPS = 989.4


def register_subpackage(name: str, folder: Path) -> bool:
    """Make ``name`` (e.g. ``wensu.conf``) importable from ``folder`` when it is not already.

    setup.cfg maps ``conf/`` to ``wensu.conf`` and ``preprocessing/`` to ``wensu.preprocessing``
    at install time; on the GPU machine wensu runs uninstalled from the copied tree
    (``PYTHONPATH=.``), so the same mapping is made here. Returns True when it registered one.
    """
    parent, _, _ = name.rpartition(".")
    if parent:
        __import__(parent)
    if importlib.util.find_spec(name) is not None:
        return False
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if parent:
        setattr(sys.modules[parent], name.rpartition(".")[2], module)
    return True


def ensure_wensu_layout() -> None:
    """``wensu.conf`` and ``wensu.preprocessing`` importable, installed or not."""
    register_subpackage("wensu.conf", REPO / "conf")
    register_subpackage("wensu.preprocessing", REPO / "preprocessing")


# ----------------------------------------------------------------------------- results


class StageRecord(dict):
    """A stage's results; ``flush()`` rewrites its JSON file atomically."""

    def __init__(self, path: Path, **initial: Any):
        super().__init__(initial)
        self.path = Path(path)
        self.flush()

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)

    def put(self, key: str, value: Any) -> Any:
        self[key] = value
        self.flush()
        return value


def atomic_json(path: Path, payload: Any) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


class Deadline:
    """Seconds left before a stage must stop starting new measurements."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + float(seconds)

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() > seconds


# ----------------------------------------------------------------------------- device


def device_of(spec: dict):
    import torch

    return torch.device(spec["device"])


def compile_lengths_dynamically(device) -> None:
    """Stages whose sequence length changes at every measurement: let torch.compile (wensu's
    flex kernels) build one dynamic-shape kernel at the first call instead of a static one and
    then a dynamic one at the second length (each build costs seconds of the stage's budget)."""
    if device.type == "cuda":
        import torch._dynamo

        torch._dynamo.config.assume_static_by_default = False


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device):
    """bf16 autocast on CUDA (the GPU recipe); plain float32 on the CPU dry run."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def time_steps(
    step: Callable[[], Any], device, warmup: int, steps: int, max_seconds: float
) -> list[float]:
    """Seconds of each of up to ``steps`` calls of ``step`` after ``warmup`` calls (at least one
    timed call; stops early once ``max_seconds`` of timed calls are spent)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times: list[float] = []
    while len(times) < steps and (not times or sum(times) < max_seconds):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(re.search(field + r":\s+(\d+)", handle.read()).group(1)) * 1024


@contextlib.contextmanager
def peak_memory(device) -> Iterator[dict]:
    """``{"peak_bytes": ...}`` allocated inside the block above what was held when it began
    (CUDA: max_memory_allocated; CPU: resident-set high-water mark, Linux)."""
    import torch

    out: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes("VmRSS")
    try:
        yield out
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - before)
        else:
            out["peak_bytes"] = int(_status_bytes("VmHWM") - before)


def free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error).lower()
    return isinstance(error, MemoryError | torch.cuda.OutOfMemoryError) or (
        "out of memory" in text or "can't allocate memory" in text
    )


def error_text(error: BaseException, limit: int = 400) -> str:
    first = " ".join(str(error).split())[:limit]
    return f"{type(error).__name__}: {first}"


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


# ----------------------------------------------------------------------------- models


def model_config(name: str, dry_run: bool, **overrides: Any) -> dict:
    """conf/model/<name>.yaml as a plain dict; the dry run keeps the file but shrinks the shape
    to 2 layers x 64 (4 heads) so every stage runs in seconds on a CPU."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml"))
    if dry_run:
        cfg.update(num_layers=2, d_model=64, num_heads=4, ffn_dim=128)
    cfg.update(overrides)
    return cfg


def train_flops_per_token(cfg: dict, seq_len: int, window: int | None = None) -> float:
    """Model FLOPs of one training token (forward + backward), PaLM's convention:
    6 x (matmul parameters: attention, FFN and LM-head projections) + 12 x layers x d x keys
    seen per query (the attention scores and weighted sum). The LM head is counted on every
    position even where an implementation (wensu) computes it on masked positions only."""
    d, layers, ffn, vocab = cfg["d_model"], cfg["num_layers"], cfg["ffn_dim"], cfg["vocab_size"]
    per_layer = 4 * d * d + 2 * d * ffn
    head = d * d + d * vocab
    keys = seq_len if window is None else min(seq_len, 2 * window + 1)
    return 6.0 * (layers * per_layer + head) + 12.0 * layers * d * keys


# ----------------------------------------------------------------------------- plots


def save_figure(figure, path: Path) -> str:
    """Save a matplotlib figure atomically (Agg backend) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.tight_layout()
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)
    return path.name


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- configs


def compose(config_name: str, overrides: list[str]) -> dict:
    """A wensu app config (conf/<config_name>.yaml + overrides) as the CLI would resolve it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3", job_name="gpu_checks"):
        cfg = hydra_compose(config_name, overrides=overrides)
    return cfg, OmegaConf.to_container(cfg, resolve=True)


def train_overrides(spec: dict, run: str) -> list[str]:
    """Overrides every wensu-train run of these checks shares (quiet, no extra checkpoints)."""
    cpu = spec["device"] == "cpu"
    out = [
        f"name={run}",
        f"data.dataset_dir={spec['dataset_dir']}",
        "resume=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "checkpoint.save_best=false",
        "checkpoint.every_n_train_steps=1000000",
    ]
    if cpu:
        out += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    return out
