"""Option types and ranges, preset conflicts and the memory preflight (no training needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wensu.model import EncoderConfig
from wensu.train import memory
from wensu.train.errors import TrainConfigError
from wensu.train.options import check_option_types
from wensu.train.presets import check_preset_conflicts

REPO = Path(__file__).resolve().parents[2]


def _model(name: str, **changes) -> EncoderConfig:
    data = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    return EncoderConfig.from_dict({**data, **changes})


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"trainer": {"max_steps": "abc"}}, "trainer.max_steps='abc'"),
        ({"trainer": {"max_steps": 0}}, "trainer.max_steps=0"),
        ({"trainer": {"limit_val_batches": 2.5}}, "trainer.limit_val_batches=2.5"),
        ({"trainer": {"precision": "8-mixed"}}, "trainer.precision='8-mixed'"),
        ({"data": {"num_workers": -3}}, "data.num_workers=-3"),
        ({"data": {"max_tokens": 1.5}}, "data.max_tokens=1.5"),
        ({"data": {"crop_length": 2}}, "data.crop_length=2"),
        ({"checkpoint": {"every_n_train_steps": 0}}, "checkpoint.every_n_train_steps=0"),
        ({"optim": {"lr": "fast"}}, "optim.lr='fast'"),
        ({"masking": {"mask_prob": 1.5}}, "masking.mask_prob=1.5"),
        ({"compile": "yes"}, "compile='yes'"),
        ({"threads": 0}, "threads=0"),
    ],
)
def test_wrong_type_or_range_names_the_key(settings, names):
    with pytest.raises(TrainConfigError) as caught:
        check_option_types(settings)
    assert str(caught.value).startswith(names) and "\n" not in str(caught.value)


def test_valid_options_pass():
    check_option_types(
        {
            "seed": 0,
            "threads": None,
            "trainer": {"max_steps": -1, "max_epochs": 3, "val_check_interval": 0.5,
                        "limit_val_batches": 1.0, "precision": "bf16-mixed"},
            "data": {"max_tokens": 8192, "val_max_tokens": None, "crop_length": 1024},
            "compile": False,
        }
    )  # fmt: skip


def test_explicit_model_reshaped_by_experiment_is_refused():
    with pytest.raises(TrainConfigError, match=r"model=wensu_1b conflicts with experiment="):
        check_preset_conflicts(["model=wensu_1b", "experiment=quickstart", "data.dataset_dir=x"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=quickstart", "model.num_layers=2"],  # keys on top of a preset: fine
        ["model=esm2_8m", "experiment=long_context"],  # the preset's own model
        ["model=wensu_1b"],  # no preset
        ["experiment=quickstart", "attention@model.attention=chunked"],  # preset sets no key
    ],
)
def test_consistent_choices_pass(overrides):
    check_preset_conflicts(overrides)


# fwd+bwd peaks (bytes) of one training step, float32, batch 1, dense attention, measured by
# experiments/benchmarks/longest_context.py (experiments/results/longest_context_cpu.json of
# 2026-11-23, commit 7c86d93): (model, tokens) -> peak.
MEASURED_PEAKS = {
    "esm2_8m": {2048: 271_417_344, 4096: 541_040_640},
    "esm2_35m": {1024: 397_099_008, 2048: 785_768_448},
}


@pytest.mark.parametrize("name", sorted(MEASURED_PEAKS))
def test_per_token_cost_matches_the_measured_peaks(name):
    """The activation model reproduces the measured growth of the peak per token."""
    (short, low), (long, high) = sorted(MEASURED_PEAKS[name].items())
    measured = (high - low) / (long - short)
    predicted = memory.estimate(_model(name), 1, "32-true").per_token_bytes
    assert predicted == pytest.approx(measured, rel=0.06)


def test_oversized_model_fails_fast_with_numbers_and_what_fits(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda accelerator: (22e9, "CPU RAM available"))
    with pytest.raises(TrainConfigError) as caught:
        memory.check_memory(_model("wensu_1b"), 8192, "32-true", "cpu", 1, 1024)
    message = str(caught.value)
    assert "47.2 GB" in message and "1,022.4 M parameters" in message and "22.0 GB" in message
    assert "model.activation_checkpointing=true" in message and "preflight=false" in message
    # The suggested budget does fit.
    fit = int(message.split("data.max_tokens=")[2].split()[0])
    assert memory.estimate(_model("wensu_1b"), fit, "32-true").total_bytes <= 22e9
    # Weights and optimizer state alone beyond the machine: use a smaller model.
    with pytest.raises(TrainConfigError, match="use a smaller model"):
        memory.check_memory(_model("wensu_1b"), 8192, "32-true", "cpu", 2, 1024)
    # Small enough: passes and returns the estimate.
    assert memory.check_memory(_model("tiny"), 8192, "32-true", "cpu", 1, 1024).parameters > 0


def test_available_memory_is_known_on_linux():
    available, what = memory.available_bytes("cpu")
    assert available is None or available > 0
    assert "CPU RAM" in what
