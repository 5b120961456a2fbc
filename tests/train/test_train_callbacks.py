"""Callbacks: RNG state round trip (weights_only-safe), loss curve, throughput accounting."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import torch

from wensu.train.callbacks import LossCurve, RNGState, ThroughputMonitor


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_rng_state_restores_every_generator():
    callback = RNGState()
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = _roundtrip(callback.state_dict())
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    restored = RNGState()
    restored.load_state_dict(saved)
    restored.on_train_batch_start(None, None, None, 0)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


class _Module:
    def __init__(self):
        self.logged = {}

    def log(self, name, value):
        self.logged[name] = value


def test_throughput_counts_tokens_of_every_rank():
    monitor = ThroughputMonitor(window=2)
    trainer = SimpleNamespace(world_size=2)
    module = _Module()
    batch = {"num_tokens": 300, "tokens": torch.ones(3, 128)}
    for _ in range(2):
        monitor.on_train_batch_start(trainer, module, batch, 0)
        monitor.on_train_batch_end(trainer, module, None, batch, 0)
    rate = module.logged["perf/tokens_per_s"]
    assert rate == 2 * 600 / monitor.train_seconds
    assert module.logged["perf/examples_per_s"] == 2 * 6 / monitor.train_seconds
    assert _roundtrip(monitor.state_dict()) == {"train_seconds": monitor.train_seconds}


def test_loss_curve_keeps_history_and_draws(tmp_path):
    curve = LossCurve(tmp_path / "curve.png", every_n_steps=1, baseline_loss=2.87)
    trainer = SimpleNamespace(
        global_step=0, callback_metrics={}, sanity_checking=False, is_global_zero=True
    )
    for step in range(1, 6):
        trainer.global_step = step
        trainer.callback_metrics = {"train/loss": torch.tensor(3.3 - 0.05 * step)}
        curve.on_train_batch_end(trainer, None, None, None, 0)
    trainer.callback_metrics["val/loss"] = torch.tensor(3.0)
    curve.on_validation_end(trainer, None)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    state = _roundtrip(curve.state_dict())
    assert [p[0] for p in state["train"]] == [1, 2, 3, 4, 5] and state["val"] == [[5, 3.0]]
    resumed = LossCurve(tmp_path / "again.png")
    resumed.load_state_dict(state)
    assert resumed.train == curve.train
