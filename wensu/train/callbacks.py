"""Training callbacks: throughput, the loss-curve PNG, RNG state, and the per-rank sample log.

Each callback that accumulates something over a run keeps it in its checkpoint state, so a run
resumed after kill -9 reports the whole run (curve, time), not just the last session.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class ThroughputMonitor(Callback):
    """Logs ``perf/tokens_per_s`` (non-pad tokens, all ranks) and ``perf/examples_per_s``.

    Time runs from one training batch's end to the next (data loading included) and stops
    during validation. Rates are averaged over windows of ``window`` training batches using the
    batch's ``num_tokens`` (a python int from the collate function, so no device sync per step).
    ``train_seconds`` is the training time of the whole run, resumes included.
    """

    def __init__(self, window: int = 10):
        self.window = max(int(window), 1)
        self.train_seconds = 0.0
        self.last_tokens_per_s: float | None = None
        self._last: float | None = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._seconds = 0.0
        self._batches = 0
        self._tokens = 0
        self._examples = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, idx):
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, idx):
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.train_seconds += elapsed
        self._seconds += elapsed
        self._batches += 1
        self._tokens += int(batch["num_tokens"])
        self._examples += int(batch["tokens"].shape[0])
        if self._batches < self.window:
            return
        world = trainer.world_size
        self.last_tokens_per_s = self._tokens * world / self._seconds
        pl_module.log("perf/tokens_per_s", self.last_tokens_per_s)
        pl_module.log("perf/examples_per_s", self._examples * world / self._seconds)
        self._reset_window()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last = None

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))


class LossCurve(Callback):
    """Collects train/validation loss and draws ``path`` (PNG, matplotlib Agg) on rank 0.

    ``baseline_loss`` (the unigram cross-entropy, nats) is drawn as a reference line.
    """

    def __init__(self, path: Path, every_n_steps: int = 10, baseline_loss: float | None = None):
        self.path = Path(path)
        self.every_n_steps = max(int(every_n_steps), 1)
        self.baseline_loss = baseline_loss
        self.train: list[list[float]] = []
        self.val: list[list[float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, idx):
        step = trainer.global_step
        if step % self.every_n_steps or (self.train and self.train[-1][0] == step):
            return
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self.train.append([step, float(loss)])

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.val.append([trainer.global_step, float(loss)])
            self.draw(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not (self.train or self.val):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
        if self.train:
            steps, losses = zip(*self.train, strict=True)
            axis.plot(steps, losses, color="tab:blue", alpha=0.8, linewidth=1, label="train")
        if self.val:
            steps, losses = zip(*self.val, strict=True)
            axis.plot(steps, losses, "o-", color="tab:orange", markersize=3, label="validation")
        if self.baseline_loss is not None:
            axis.axhline(
                self.baseline_loss, color="grey", linestyle="--", linewidth=1,
                label=f"unigram baseline (ppl {np.exp(self.baseline_loss):.2f})",
            )  # fmt: skip
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("masked-LM cross-entropy (nats)")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.png")
        figure.savefig(tmp)
        plt.close(figure)
        tmp.replace(self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = [list(p) for p in state_dict.get("train", [])]
        self.val = [list(p) for p in state_dict.get("val", [])]


class RNGState(Callback):
    """Saves torch (CPU and CUDA), numpy and python RNG states; restores them on resume.

    They are applied just before the first training batch after the restore, so nothing that
    runs between loading and training (sanity validation, loader start-up) can shift them.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": str(kind),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "position": int(position),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "python": _plain(random.getstate()),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, idx):
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                numpy_state["kind"],
                numpy_state["keys"].numpy().astype(np.uint32),
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
        random.setstate(_tuples(state["python"]))
        cuda = state.get("cuda")
        if (
            cuda is not None
            and torch.cuda.is_available()
            and len(cuda) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(cuda)


def _plain(value: Any) -> Any:
    """Tuples -> lists recursively (python's random state is nested tuples of ints)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


class SampleLog(Callback):
    """Audit trail: every trained record id per rank, and each rank's final weights digest.

    ``<directory>/rank<r>.tsv`` gets one line per training batch (``step epoch batch ids``,
    ids comma-separated); after a resume the batches re-run from the checkpoint appear again
    with the same step, so readers keep the last line per step. ``rank<r>.json`` holds the
    SHA-256 of the rank's parameters at the end of training (identical across DDP ranks).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._handle = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._path(trainer, "tsv"), "a", encoding="utf-8")  # noqa: SIM115

    def _path(self, trainer: Trainer, suffix: str) -> Path:
        return self.directory / f"rank{trainer.global_rank}.{suffix}"

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, idx):
        ids = ",".join(batch["ids"])
        step = trainer.global_step
        self._handle.write(f"{step}\t{batch['epoch']}\t{batch['batch_index']}\t{ids}\n")
        self._handle.flush()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "weights_sha256": digest.hexdigest(),
        }
        self._path(trainer, "json").write_text(json.dumps(record, indent=2) + "\n")
