"""Learning-rate schedule: warmup then cosine/linear decay, checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from wensu.train.schedule import WarmupDecay, build_scheduler


def test_warmup_is_linear_up_to_the_peak():
    schedule = WarmupDecay(warmup_steps=4, total_steps=20)
    assert [schedule(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule(4) == pytest.approx(1.0)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_reaches_the_floor_and_stays(decay):
    schedule = WarmupDecay(warmup_steps=10, total_steps=110, decay=decay, min_lr_ratio=0.1)
    for step in (10, 35, 60, 85, 110, 500):
        progress = min((step - 10) / 100, 1.0)
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
        assert schedule(step) == pytest.approx(0.1 + 0.9 * shape)
    assert schedule(110) == pytest.approx(0.1)


def test_constant_and_no_warmup():
    assert WarmupDecay(0, 10, "constant")(0) == 1.0
    assert WarmupDecay(0, 10, "cosine")(0) == pytest.approx(1.0)


def test_scheduler_drives_the_optimizer_and_resumes_from_state():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = build_scheduler(optimizer, WarmupDecay(2, 10, "linear", 0.0))
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 8.75e-4, 7.5e-4, 6.25e-4])
    state = scheduler.state_dict()
    # The state is plain data: it survives torch.load(weights_only=True) in checkpoints.
    assert state["lr_lambdas"][0] == {
        "warmup_steps": 2, "total_steps": 10, "decay": "linear", "min_lr_ratio": 0.0
    }  # fmt: skip
    fresh_optimizer = torch.optim.AdamW([param], lr=1e-3)
    fresh = build_scheduler(fresh_optimizer, WarmupDecay(2, 10, "linear", 0.0))
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr())


@pytest.mark.parametrize(
    "kwargs", [{"decay": "step"}, {"warmup_steps": -1}, {"total_steps": 0}, {"min_lr_ratio": 2}]
)
def test_invalid_schedules_are_refused(kwargs):
    args = {"warmup_steps": 1, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError):
        WarmupDecay(**args)
