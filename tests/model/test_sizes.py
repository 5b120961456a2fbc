"""Model sizes: each conf/model YAML builds on the meta device with its stated parameter count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from wensu.model import EncoderConfig, build_encoder, count_parameters

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"

# Exact counts (tied LM-head weight counted once, no contact head).
EXPECTED = {
    "tiny": 106_529,
    "esm2_8m": 7_512_353,
    "esm2_35m": 33_501_153,
    "esm2_150m": 148_139_553,
    "esm2_650m": 651_042_593,
    "wensu_1b": 1_022_352_417,
}
ESM2_SHAPES = {  # name: (layers, d_model, heads), as published for the ESM-2 checkpoints
    "esm2_8m": (6, 320, 20),
    "esm2_35m": (12, 480, 20),
    "esm2_150m": (30, 640, 20),
    "esm2_650m": (33, 1280, 20),
}


def _config(name: str) -> EncoderConfig:
    path = CONF / f"{name}.yaml"
    return EncoderConfig.from_dict(OmegaConf.to_container(OmegaConf.load(path)), source=str(path))


def _formula(cfg: EncoderConfig) -> int:
    d, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    per_layer = 4 * (d * d + d) + 2 * 2 * d + (d * f + f) + (f * d + d)
    return v * d + cfg.num_layers * per_layer + 2 * d + (d * d + d) + 2 * d + v


# Cell encoders (wensu.model.cell_encoder) take vocab_size/num_bins from the cell dataset;
# cells_from_checkpoint takes the whole architecture from a checkpoint (an empty mapping).
CELL_MODELS = {"cells_small", "cells_from_checkpoint"}


def test_every_model_yaml_is_covered():
    assert {p.stem for p in CONF.glob("*.yaml")} == set(EXPECTED) | CELL_MODELS


def test_cell_model_size_on_the_shared_pbmc_vocabulary():
    from wensu.model.cell_encoder import CellEncoder, CellEncoderConfig

    values = OmegaConf.to_container(OmegaConf.load(CONF / "cells_small.yaml"))
    # The committed run (experiments/results/cells_eval): 20,718 genes + 5 specials, 8 bins + mask.
    values.update(vocab_size=20_723, num_bins=9, max_genes=256)
    model = CellEncoder(CellEncoderConfig.from_dict(values))
    assert count_parameters(model) == 3_465_097
    gene_embedding = max(p.numel() for p in model.parameters())
    assert gene_embedding == 20_723 * 128  # most of the model is the gene vocabulary


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count(name):
    cfg = _config(name)
    model = build_encoder(cfg, device="meta")
    assert next(model.parameters()).device.type == "meta"
    assert count_parameters(model) == EXPECTED[name] == _formula(cfg)


@pytest.mark.parametrize("name", sorted(ESM2_SHAPES))
def test_esm2_sizes_match_hugging_face_minus_contact_head(name):
    transformers = pytest.importorskip("transformers")
    cfg = _config(name)
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads) == ESM2_SHAPES[name]
    assert cfg.ffn_dim == 4 * cfg.d_model
    hf_config = transformers.EsmConfig(
        vocab_size=33,
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        position_embedding_type="rotary",
        emb_layer_norm_before=False,
        token_dropout=True,
        pad_token_id=1,
        mask_token_id=32,
    )
    with torch.device("meta"):
        reference = transformers.EsmForMaskedLM(hf_config)
    contact_head = cfg.num_layers * cfg.num_heads + 1
    assert count_parameters(reference) - contact_head == EXPECTED[name]


def test_one_billion_model_is_about_one_billion():
    assert 0.95e9 < EXPECTED["wensu_1b"] < 1.1e9
    assert _config("wensu_1b").head_dim == 64
