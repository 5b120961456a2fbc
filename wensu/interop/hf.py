"""Hugging Face `EsmForMaskedLM` (ESM-2) state dicts <-> wensu `Encoder`.

Name map (HF, with the `esm.` prefix of `EsmForMaskedLM`; a bare `EsmModel` has none):

    esm.embeddings.word_embeddings            embed_tokens
    esm.encoder.layer.N.attention.self.query  layers.N.self_attn.q_proj   (key/value: k/v_proj)
    esm.encoder.layer.N.attention.output.dense layers.N.self_attn.out_proj
    esm.encoder.layer.N.attention.LayerNorm   layers.N.self_attn_layer_norm
    esm.encoder.layer.N.intermediate.dense    layers.N.ffn.fc1
    esm.encoder.layer.N.output.dense          layers.N.ffn.fc2
    esm.encoder.layer.N.LayerNorm             layers.N.final_layer_norm
    esm.encoder.emb_layer_norm_after          emb_layer_norm_after
    lm_head.{dense,layer_norm,bias}           lm_head.{dense,layer_norm,bias}

Dropped and recorded: `lm_head.decoder.weight` (tied; checked equal to the embedding),
`esm.contact_head.*`, `esm.pooler.*`, `esm.embeddings.position_ids`, and the rotary `inv_freq`
buffers (model-level `esm.rotary_embeddings.inv_freq`, per layer
`...layer.N.attention.self.rotary_embeddings.inv_freq`, or the `layer.*.` form that
transformers 5 `save_pretrained` writes; used as the rotary frequencies).

`to_hf` writes the per-layer `inv_freq` layout of the published hub files, which every
transformers version loads (newer ones remap it to the model-level buffer), and omits the
contact head, which a wensu encoder does not have.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wensu.interop.esm import (
    ESM2_MASK_IDX,
    ESM2_PADDING_IDX,
    ESM2_VOCAB_SIZE,
    ConvertedState,
    EsmCheckpointError,
    build_encoder,
    make_config,
)
from wensu.model.config import AttentionConfig
from wensu.model.rotary import inverse_frequencies

HF_DEFAULT_LAYER_NORM_EPS = 1e-12  # EsmConfig's default when config.json omits it (ESM-2: 1e-5)
_LAYER = r"^encoder\.layer\.(\d+)\."
_RENAMES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^embeddings\.word_embeddings\.", "embed_tokens."),
        (_LAYER + r"attention\.self\.query\.", r"layers.\1.self_attn.q_proj."),
        (_LAYER + r"attention\.self\.key\.", r"layers.\1.self_attn.k_proj."),
        (_LAYER + r"attention\.self\.value\.", r"layers.\1.self_attn.v_proj."),
        (_LAYER + r"attention\.output\.dense\.", r"layers.\1.self_attn.out_proj."),
        (_LAYER + r"attention\.LayerNorm\.", r"layers.\1.self_attn_layer_norm."),
        (_LAYER + r"intermediate\.dense\.", r"layers.\1.ffn.fc1."),
        (_LAYER + r"output\.dense\.", r"layers.\1.ffn.fc2."),
        (_LAYER + r"LayerNorm\.", r"layers.\1.final_layer_norm."),
        (r"^encoder\.emb_layer_norm_after\.", "emb_layer_norm_after."),
        (r"^lm_head\.(dense|layer_norm)\.", r"lm_head.\1."),
        (r"^lm_head\.bias$", "lm_head.bias"),
    )
)
_DROPPED = re.compile(
    r"^(contact_head\.|pooler\.|embeddings\.position_ids$|rotary_embeddings\.inv_freq$"
    r"|encoder\.layer\.(\d+|\*)\.attention\.self\.rotary_embeddings\.inv_freq$)"
)
# Old TF-era names, which transformers 5 `save_pretrained` also writes for `LayerNorm` modules.
_LEGACY_LAYER_NORM = re.compile(r"LayerNorm\.(gamma|beta)$")
_LEGACY_SUFFIX = {"gamma": "weight", "beta": "bias"}
_NOT_ESM2 = {
    "embeddings.position_embeddings.weight": "learned absolute positions (ESM-1b style)",
    "embeddings.layer_norm.weight": "a LayerNorm before the first layer (ESM-1b style)",
}


def _hf_name_to_wensu(name: str) -> str | None:
    for pattern, replacement in _RENAMES:
        if pattern.search(name):
            return pattern.sub(replacement, name)
    return None


def rename_hf(state_dict: Mapping[str, Tensor], source: str) -> ConvertedState:
    """Rename HF ESM-2 tensors to wensu names (dropping and recording the extras)."""
    state = ConvertedState(source=source)
    tied_output = None
    unknown = []
    for raw_name, tensor in state_dict.items():
        name = _LEGACY_LAYER_NORM.sub(
            lambda m: f"LayerNorm.{_LEGACY_SUFFIX[m.group(1)]}", raw_name.removeprefix("esm.")
        )
        if name in _NOT_ESM2:
            raise EsmCheckpointError(
                f"{source}: {raw_name!r} means {_NOT_ESM2[name]}; only ESM-2 is supported"
            )
        if name == "lm_head.decoder.weight":
            tied_output = (raw_name, tensor)
            state.dropped.append(raw_name)
        elif _DROPPED.match(name):
            if name.endswith("inv_freq"):
                state.inv_freq.append(tensor)
            state.dropped.append(raw_name)
        elif (wensu_name := _hf_name_to_wensu(name)) is not None:
            state.add(wensu_name, raw_name, tensor)
        else:
            unknown.append(raw_name)
    if unknown:
        raise EsmCheckpointError(
            f"{source}: tensors that are not part of an ESM-2 EsmForMaskedLM: {sorted(unknown)[:8]}"
        )
    if tied_output is not None and "embed_tokens.weight" in state.tensors:
        name, tensor = tied_output
        if not torch.equal(tensor, state.tensors["embed_tokens.weight"]):
            raise EsmCheckpointError(
                f"{source}: {name!r} differs from the word embedding; ESM-2 ties them "
                "(tie_word_embeddings) and so does wensu"
            )
    return state


def _config_dict(hf_config: Any) -> dict:
    if isinstance(hf_config, Mapping):
        return dict(hf_config)
    if hasattr(hf_config, "to_dict"):
        return hf_config.to_dict()
    raise EsmCheckpointError(f"hf_config must be a dict or an EsmConfig, got {type(hf_config)}")


def _check_esm2_config(config: Mapping[str, Any], source: str) -> None:
    """Raise unless the HF config describes an ESM-2 masked language model wensu can hold."""
    requirements = {
        "position_embedding_type": ("rotary", "absolute"),  # HF defaults as EsmConfig does
        "emb_layer_norm_before": (False, None),
        "is_folding_model": (False, None),
        "is_decoder": (False, None),
        "add_cross_attention": (False, None),
        "vocab_size": (ESM2_VOCAB_SIZE, ESM2_VOCAB_SIZE),
        "pad_token_id": (ESM2_PADDING_IDX, ESM2_PADDING_IDX),
        "mask_token_id": (ESM2_MASK_IDX, ESM2_MASK_IDX),
        "hidden_act": ("gelu", "gelu"),
    }
    for key, (wanted, default) in requirements.items():
        value = config.get(key, default)
        if value != wanted and not (wanted is False and not value):
            raise EsmCheckpointError(
                f"{source}: config {key}={value!r}, but ESM-2 (and wensu) use {wanted!r}"
            )


def _rotary_base(config: Mapping[str, Any]) -> float:
    parameters = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or parameters.get("rope_theta") or 10000.0)


def from_hf(
    state_dict: Mapping[str, Tensor],
    hf_config: Mapping[str, Any] | Any,
    *,
    attention: AttentionConfig | Mapping | None = None,
    source: str = "Hugging Face state dict",
):
    """An `Encoder` (eval mode) holding a Hugging Face ESM-2 `EsmForMaskedLM` state dict.

    `hf_config` is the `config.json` contents or an `EsmConfig`; `attention` selects the wensu
    attention backend/window (default: dense, i.e. exactly ESM-2).
    """
    config = _config_dict(hf_config)
    _check_esm2_config(config, source)
    state = rename_hf(state_dict, source)
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        if key not in config:
            raise EsmCheckpointError(f"{source}: config has no {key!r}")
    encoder_config = make_config(
        state,
        num_layers=int(config["num_hidden_layers"]),
        d_model=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        ffn_dim=int(config["intermediate_size"]),
        token_dropout=bool(config.get("token_dropout", False)),
        rotary_base=_rotary_base(config),
        dropout=float(config.get("hidden_dropout_prob") or 0.0),
        attention_dropout=float(config.get("attention_probs_dropout_prob") or 0.0),
        layer_norm_eps=float(config.get("layer_norm_eps", HF_DEFAULT_LAYER_NORM_EPS)),
        attention=attention,
    )
    return build_encoder(encoder_config, state)


def _wensu_name_to_hf(name: str) -> str:
    layer = re.match(r"^layers\.(\d+)\.(.+)$", name)
    if layer is None:
        fixed = {
            "embed_tokens.weight": "esm.embeddings.word_embeddings.weight",
            "emb_layer_norm_after.weight": "esm.encoder.emb_layer_norm_after.weight",
            "emb_layer_norm_after.bias": "esm.encoder.emb_layer_norm_after.bias",
        }
        if name in fixed:
            return fixed[name]
        if name.startswith("lm_head."):
            return name
        raise ValueError(f"encoder tensor {name!r} has no Hugging Face ESM-2 counterpart")
    index, rest = layer.groups()
    module, _, kind = rest.rpartition(".")
    modules = {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "self_attn_layer_norm": "attention.LayerNorm",
        "ffn.fc1": "intermediate.dense",
        "ffn.fc2": "output.dense",
        "final_layer_norm": "LayerNorm",
    }
    if module not in modules:
        raise ValueError(f"encoder tensor {name!r} has no Hugging Face ESM-2 counterpart")
    return f"esm.encoder.layer.{index}.{modules[module]}.{kind}"


def hf_config_dict(encoder_config) -> dict[str, Any]:
    """`config.json` contents of the `EsmForMaskedLM` equivalent to a dense wensu encoder."""
    return {
        "architectures": ["EsmForMaskedLM"],
        "model_type": "esm",
        "vocab_size": encoder_config.vocab_size,
        "hidden_size": encoder_config.d_model,
        "num_hidden_layers": encoder_config.num_layers,
        "num_attention_heads": encoder_config.num_heads,
        "intermediate_size": encoder_config.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": encoder_config.dropout,
        "attention_probs_dropout_prob": encoder_config.attention_dropout,
        "max_position_embeddings": 1026,
        "initializer_range": encoder_config.init_std,
        "layer_norm_eps": encoder_config.layer_norm_eps,
        "position_embedding_type": "rotary",
        "rope_theta": encoder_config.rotary_base,
        "token_dropout": encoder_config.token_dropout,
        "emb_layer_norm_before": False,
        "mask_token_id": encoder_config.mask_idx,
        "pad_token_id": encoder_config.padding_idx,
        "cls_token_id": 0,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
        "is_folding_model": False,
        "torch_dtype": "float32",
    }


def to_hf(encoder) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(`EsmForMaskedLM` state dict, `config.json` dict) of a dense-FFN wensu encoder.

    `EsmForMaskedLM(EsmConfig(**config)).load_state_dict(state_dict, strict=False)` then reports
    only the contact head as missing. A windowed encoder exports its weights, but Hugging Face
    attends densely, so outputs agree only for sequences no longer than the window (warned).
    """
    config = encoder.cfg
    if config.ffn != "dense":
        raise ValueError(f"to_hf needs a dense-FFN encoder; this one has ffn={config.ffn!r}")
    if config.vocab_size != ESM2_VOCAB_SIZE:
        raise ValueError(f"to_hf needs the ESM-2 alphabet (33 tokens), got {config.vocab_size}")
    if config.attention.window is not None:
        warnings.warn(
            f"exporting an encoder with attention window {config.attention.window} to Hugging "
            "Face ESM, which attends densely: outputs match only up to that length",
            stacklevel=2,
        )
    tensors = {}
    inv_freq = None
    for name, tensor in encoder.state_dict().items():
        if name.endswith("inv_freq"):
            inv_freq = tensor
            continue
        tensors[_wensu_name_to_hf(name)] = tensor.detach().clone()
    tensors["lm_head.decoder.weight"] = tensors["esm.embeddings.word_embeddings.weight"].clone()
    if inv_freq is None:
        inv_freq = inverse_frequencies(config.head_dim, config.rotary_base)
    for index in range(config.num_layers):
        key = f"esm.encoder.layer.{index}.attention.self.rotary_embeddings.inv_freq"
        tensors[key] = inv_freq.detach().clone().float()
    return tensors, hf_config_dict(config)


def save_hf(encoder, directory: str | Path) -> Path:
    """Write `config.json` + `model.safetensors` that `EsmForMaskedLM.from_pretrained` reads.

    Each file is written under a temporary name and renamed, so a crash never leaves a
    half-written file under the final name.
    """
    from safetensors.torch import save_file

    tensors, config = to_hf(encoder)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_tmp = directory / "model.safetensors.tmp"
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, weights_tmp, metadata={"format": "pt"}
    )
    os.replace(weights_tmp, directory / "model.safetensors")
    config_tmp = directory / "config.json.tmp"
    config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(config_tmp, directory / "config.json")
    return directory
