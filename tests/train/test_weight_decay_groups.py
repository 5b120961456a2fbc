"""Protein and cell training modules (pretraining and the classifier) split their parameters
for AdamW by the same rule (wensu.train.base_module.weight_decay_groups): no weight decay on
vectors (biases, LayerNorm weights), on the MoE experts' 2-D biases ``b1``/``b2``, nor on
frozen parameters."""

from __future__ import annotations

import pytest
import torch

from wensu.train import base_module
from wensu.train.base_module import weight_decay_groups
from wensu.train.cell_finetune import CellClassifierModule
from wensu.train.cell_module import CellMaskedModule
from wensu.train.module import MaskedLMModule

PROTEIN = {
    "num_layers": 1,
    "d_model": 16,
    "num_heads": 2,
    "ffn_dim": 32,
    "ffn": "moe",
    "moe_num_experts": 2,
    "moe_top_k": 1,
}
CELL = {
    "vocab_size": 30,
    "num_bins": 9,
    "num_layers": 1,
    "d_model": 16,
    "num_heads": 2,
    "ffn_dim": 32,
    "max_genes": 16,
}


def _expected_no_decay(model: torch.nn.Module) -> set[str]:
    return {
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.ndim < 2 or name.rsplit(".", 1)[-1] in ("bias", "b1", "b2"))
    }


def _groups_seen(monkeypatch, where, lightning_module) -> tuple[set[str], set[str]]:
    """The (decay, no_decay) parameter names ``configure_optimizers`` hands to AdamW."""
    seen = {}

    def capture(_module, decay, no_decay):
        seen["decay"], seen["no_decay"] = decay, no_decay
        return {}

    monkeypatch.setattr(where, "adamw_with_schedule", capture)
    lightning_module.configure_optimizers()
    names = {id(p): n for n, p in lightning_module.model.named_parameters()}
    return {names[id(p)] for p in seen["decay"]}, {names[id(p)] for p in seen["no_decay"]}


@pytest.mark.parametrize(
    ("where", "build"),
    [
        (base_module, lambda: MaskedLMModule(PROTEIN)),
        (
            base_module,
            lambda: CellMaskedModule(CELL, [f"G{i}" for i in range(25)], [1 / 9] * 9),
        ),
        (
            base_module,
            lambda: CellClassifierModule(
                CELL, [f"G{i}" for i in range(25)], ["B", "T"], ["G1", "G2"], {}, [1.0, 1.0]
            ),
        ),
    ],
    ids=["protein", "cell", "cell_classifier"],
)
def test_protein_and_cell_modules_exclude_the_same_parameters(monkeypatch, where, build):
    lightning_module = build()
    frozen = next(n for n, p in lightning_module.model.named_parameters() if p.ndim == 2)
    lightning_module.model.get_parameter(frozen).requires_grad_(False)
    decay, no_decay = _groups_seen(monkeypatch, where, lightning_module)
    assert no_decay == _expected_no_decay(lightning_module.model)
    everything = {n for n, _ in lightning_module.model.named_parameters()}
    assert decay == everything - no_decay - {frozen} and decay  # each trainable one, once


def test_moe_biases_and_frozen_parameters_are_not_decayed():
    model = MaskedLMModule(PROTEIN).model
    model.embed_tokens.weight.requires_grad_(False)
    decay, no_decay = weight_decay_groups(model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {by_id[id(p)] for p in no_decay}
    assert {"layers.0.ffn.b1", "layers.0.ffn.b2"} <= no_decay_names  # 2-D, still no decay
    assert "embed_tokens.weight" not in {by_id[id(p)] for p in decay + no_decay}
