"""wensu-train configs: every experiment composes; bad settings fail before training."""

from __future__ import annotations

import shutil

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from train_helpers import run_train, shared_dataset

from wensu.checkpoint import CheckpointMismatchError, save_encoder_checkpoint
from wensu.model import Encoder, EncoderConfig, count_parameters
from wensu.train import preflight
from wensu.train.errors import UsageError
from wensu.train.protein_run import prepare
from wensu.train.session import strategy_from as _strategy

EXPERIMENTS = ("quickstart", "esm2_8m_proteomes", "long_context", "wensu_1b_fsdp")


def settings(*overrides: str) -> dict:
    with initialize_config_module(config_module="wensu.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return shared_dataset(tmp_path_factory)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_into_valid_settings(experiment):
    config = settings(f"experiment={experiment}", "data.dataset_dir=/data")
    preflight.check_keys(config)
    model = EncoderConfig.from_dict(config["model"])
    assert config["name"] == experiment
    assert config["data"]["max_tokens"] >= config["data"]["crop_length"]
    if model.attention.window is not None:
        assert model.attention.window < config["data"]["crop_length"]


def test_long_context_uses_chunked_windows_over_packed_crops():
    config = settings("experiment=long_context", "data.dataset_dir=/data")
    assert config["model"]["attention"] == {
        "backend": "chunked", "window": 256, "num_global": 1, "block_size": 128
    }  # fmt: skip
    assert config["data"]["concatenate"] is True
    assert 8192 <= config["data"]["crop_length"] <= 32768
    assert config["model"]["activation_checkpointing"] is True


def test_wensu_1b_fsdp_builds_on_the_meta_device():
    config = settings("experiment=wensu_1b_fsdp", "data.dataset_dir=/data")
    assert config["trainer"]["strategy"] == "fsdp"
    assert config["trainer"]["precision"] == "bf16-mixed"
    with torch.device("meta"):
        encoder = Encoder(EncoderConfig.from_dict(config["model"]))
    assert count_parameters(encoder) == 1_022_352_417
    assert encoder.cfg.attention.backend == "flex" and encoder.cfg.activation_checkpointing
    strategy = _strategy(dict(config["trainer"]))
    from lightning.pytorch.strategies import FSDPStrategy

    from wensu.model.layers import TransformerLayer

    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {TransformerLayer}
    assert strategy._state_dict_type == "full"


def test_cfg_job_prints_the_resolved_1b_config(tmp_path):
    result = run_train(
        ["experiment=wensu_1b_fsdp", "data.dataset_dir=/data", "--cfg", "job"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.model.num_layers == 36 and printed.model.d_model == 1536
    assert printed.trainer.strategy == "fsdp" and printed.data.crop_length == 8192


def _expect_usage_error(config: dict, run_dir, match: str) -> str:
    with pytest.raises(UsageError, match=match) as caught:
        prepare(config, run_dir)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_impossible_settings_fail_before_training(dataset, tmp_path):
    base = [f"data.dataset_dir={dataset}"]
    cases = [
        (["attention@model.attention=chunked", "data.crop_length=256"], r"window=256 .*=256"),
        (["trainer=gpu"], r"trainer.accelerator=gpu but this machine has no CUDA GPU"),
        (["trainer=fsdp", "trainer.accelerator=cpu"], r"trainer.strategy=fsdp needs GPUs"),
        (["+trainer.not_an_option=1"], r"unknown config key trainer.not_an_option"),
        (["+model.depth=3"], r"unknown model config field\(s\) \['depth'\]"),
        (["+optim.momentum=0.9"], r"unknown optim option\(s\) \['momentum'\]"),
        (["data.max_tokens=64"], r"data.max_tokens=64 is smaller than data.crop_length"),
        (["ckpt_path=last"], r"ckpt_path=last but .*last.ckpt does not exist"),
        (["data.dataset_dir=/no/such/dir"], r"data.dataset_dir=/no/such/dir: no such directory"),
    ]  # fmt: skip
    if torch.cuda.is_available():
        cases = [c for c in cases if "gpu" not in c[1] and "GPUs" not in c[1]]
    for overrides, match in cases:
        _expect_usage_error(settings(*base, *overrides), tmp_path, match)
    # A flex model on CPU trains with the chunked backend: a notice, not an error.
    flex = prepare(settings(*base, "attention@model.attention=flex"), tmp_path)
    assert any("flex" in notice for notice in flex.notices)


def test_corrupt_shard_fails_before_training(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    shard = copy / "train" / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    message = _expect_usage_error(
        settings(f"data.dataset_dir={copy}"), tmp_path / "run", "checksum mismatch"
    )
    assert str(shard) in message


def test_checkpoint_of_another_size_is_refused(dataset, tmp_path):
    other = Encoder(EncoderConfig(num_layers=3, d_model=32, num_heads=4, ffn_dim=64))
    path = save_encoder_checkpoint(other, tmp_path / "other.ckpt")
    config = settings(f"data.dataset_dir={dataset}", f"ckpt_path={path}")
    message = _expect_usage_error(config, tmp_path, "num_layers=3, d_model=32")
    assert "num_layers=2, d_model=64" in message and str(path) in message
    with pytest.raises(CheckpointMismatchError):
        preflight.check_resume_checkpoint(path, EncoderConfig.from_dict(config["model"]))
