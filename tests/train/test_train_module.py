"""MaskedLMModule: loss on masked positions only, MoE aux loss, deterministic masks, metrics."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from train_helpers import shared_dataset

from wensu.alphabet import get_alphabet
from wensu.data.masking import IGNORE_INDEX, mask_tokens
from wensu.train.datamodule import ProteinDataModule
from wensu.train.metrics import MaskedLMMetric
from wensu.train.module import MaskedLMModule, stream_seed

TINY = {"num_layers": 2, "d_model": 32, "num_heads": 4, "ffn_dim": 64}
SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSDNGPQNQRNAPRITFGGPSDSTG", "MKV"]


def _batch() -> torch.Tensor:
    return torch.as_tensor(get_alphabet().batch_encode(SEQUENCES))


def _module(**model) -> MaskedLMModule:
    torch.manual_seed(0)
    return MaskedLMModule(model={**TINY, **model}, schedule={"warmup_steps": 2})


def test_loss_is_cross_entropy_over_masked_positions_only():
    module = _module()
    tokens = _batch()
    with torch.no_grad():
        result = module.masked_lm_step(tokens, torch.Generator().manual_seed(5))
    inputs, labels = mask_tokens(tokens, get_alphabet(), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = module.model(inputs)["logits"]
    reference = F.cross_entropy(logits.reshape(-1, 33), labels.reshape(-1), ignore_index=-100)
    selected = labels != IGNORE_INDEX
    assert int(result["count"]) == int(selected.sum()) > 0
    assert float(result["mlm_loss"]) == pytest.approx(float(reference), rel=1e-5)
    assert float(result["loss_sum"]) == pytest.approx(float(reference) * int(selected.sum()), 1e-5)
    correct = (logits.argmax(-1)[selected] == labels[selected]).sum()
    assert int(result["correct"]) == int(correct)
    # Specials and padding are never targets.
    specials = torch.isin(tokens, torch.as_tensor(get_alphabet().special_indices))
    assert not selected[specials].any()


def test_moe_aux_loss_is_added():
    module = _module(ffn="moe", moe_num_experts=4, moe_top_k=2)
    result = module.masked_lm_step(_batch(), torch.Generator().manual_seed(1))
    assert float(result["aux_loss"].detach()) > 0
    total = result["mlm_loss"] + result["aux_loss"]
    assert float(result["loss"].detach()) == pytest.approx(float(total.detach()))
    result["loss"].backward()
    assert module.model.layers[0].ffn.router.weight.grad.abs().sum() > 0


def test_validation_masks_depend_only_on_seed_and_batch_index():
    first, second = _module(), _module()
    tokens = _batch()
    batch = {"tokens": tokens}
    for module in (first, second):
        module.validation_step(batch, 0)
        module.validation_step(batch, 7)
    a, b = first.val_metric.compute(), second.val_metric.compute()
    assert float(a["loss"]) == float(b["loss"])
    assert int(a["masked_tokens"]) == int(b["masked_tokens"])
    # Batch 0 and batch 7 use different masks, reproducible from the documented seed.
    seed0 = stream_seed(first.masking_settings.val_seed, 3, 0, 0)
    seed7 = stream_seed(first.masking_settings.val_seed, 3, 0, 7)
    expected = [
        first.masked_lm_step(tokens, torch.Generator().manual_seed(s)) for s in (seed0, seed7)
    ]
    assert int(a["masked_tokens"]) == sum(int(r["count"]) for r in expected)
    mean = sum(float(r["loss_sum"]) for r in expected) / int(a["masked_tokens"])
    assert float(a["loss"]) == pytest.approx(mean, rel=1e-5)


def test_metric_weights_every_masked_token_equally():
    metric = MaskedLMMetric()
    metric.update(torch.tensor(10.0), torch.tensor(3), torch.tensor(5))
    metric.update(torch.tensor(2.0), torch.tensor(1), torch.tensor(1))
    values = metric.compute()
    assert float(values["loss"]) == pytest.approx(12 / 6)
    assert float(values["perplexity"]) == pytest.approx(torch.e**2, rel=1e-6)
    assert float(values["accuracy"]) == pytest.approx(4 / 6)


def test_stream_seed_is_deterministic_and_distinct():
    assert stream_seed(0, 1, 0, 5) == stream_seed(0, 1, 0, 5)
    seeds = {stream_seed(0, s, r, b) for s in (1, 2) for r in (0, 1) for b in range(50)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)


def test_optimizer_groups_and_hyperparameters_are_plain():
    module = _module()
    names = dict(module.model.named_parameters())
    # Build the optimizer outside a trainer with an explicit horizon.
    module.schedule_settings.total_steps = 10
    config = module.configure_optimizers()
    groups = config["optimizer"].param_groups
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    no_decay = {id(p) for p in groups[1]["params"]}
    for name, param in names.items():
        expect_plain = param.ndim < 2 or name.endswith("bias")
        assert (id(param) in no_decay) == expect_plain, name
    assert config["optimizer"].defaults.get("fused") is True
    buffer = io.BytesIO()
    torch.save(dict(module.hparams), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["model"]["d_model"] == 32 and loaded["masking"]["mask_prob"] == 0.15


def test_short_fit_counts_tokens_and_follows_the_schedule(tmp_path, tmp_path_factory):
    dataset = shared_dataset(tmp_path_factory)
    datamodule = ProteinDataModule(dataset, max_tokens=2048, crop_length=128, num_workers=0)
    module = _module()
    seen: list[int] = []
    original = datamodule.on_before_batch_transfer

    def record(batch, index):
        seen.append(batch["num_tokens"])
        return original(batch, index)

    datamodule.on_before_batch_transfer = record
    trainer = Trainer(
        accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        use_distributed_sampler=False, gradient_clip_val=1.0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert module.batches_trained == 5
    assert int(module.tokens_seen) == sum(seen[:5])
    # warmup 2, then cosine to 10% over the remaining 3 steps: lr after 5 steps is the floor.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(4e-4 * 0.1)
    assert datamodule.train_sampler.state_dict()["consumed"] == 5
