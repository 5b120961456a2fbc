"""fair-esm (`esm.pretrained`) ESM-2 checkpoints -> wensu `Encoder`.

A fair-esm ESM-2 file (e.g. `esm2_t6_8M_UR50D.pt`) is a dict with `model` (the state dict, names
prefixed `encoder.sentence_encoder.` / `encoder.`, exactly as fair-esm's own loader strips them)
and `cfg` (`cfg["model"]` an `argparse.Namespace` with `encoder_layers`, `encoder_embed_dim`,
`encoder_attention_heads`, `token_dropout`); older-style files carry `args` instead of `cfg`.
After the prefix is stripped the names are wensu's own except the FFN (`layers.N.fc1` ->
`layers.N.ffn.fc1`). Dropped and recorded: `contact_head.*`, the tied `lm_head.weight` (checked
equal to `embed_tokens.weight`), and `layers.N.self_attn.rot_emb.inv_freq` (used as the rotary
frequencies, see `wensu.interop.esm`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from wensu.interop.esm import (
    ConvertedState,
    EsmCheckpointError,
    build_encoder,
    count_layers,
    esm2_num_heads,
    make_config,
    shape_of,
)
from wensu.model.config import AttentionConfig

_PREFIX = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
_FFN = re.compile(r"^(layers\.\d+\.)(fc1|fc2)\.")
_ROTARY = re.compile(r"^layers\.(\d+)\.self_attn\.rot_emb\.inv_freq$")
_ESM1_ONLY = ("embed_positions.weight", "emb_layer_norm_before.weight")


def split_checkpoint(checkpoint: Mapping[str, Any]) -> tuple[Mapping[str, Tensor], dict]:
    """(state dict, hyper-parameters) of a fair-esm file or of a bare state dict."""
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        hparams = {}
        for key in ("args", "cfg"):
            if key in checkpoint and checkpoint[key] is not None:
                value = checkpoint[key]
                if key == "cfg" and isinstance(value, Mapping):
                    value = value.get("model", value)
                hparams.update(_as_dict(value))
        return checkpoint["model"], hparams
    return checkpoint, {}


def _as_dict(value: Any) -> dict:
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def rename_fair_esm(state_dict: Mapping[str, Tensor], source: str) -> ConvertedState:
    """Rename fair-esm ESM-2 tensors to wensu names (dropping and recording the extras)."""
    state = ConvertedState(source=source)
    tied_output = None
    for raw_name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise EsmCheckpointError(f"{source}: entry {raw_name!r} is not a tensor")
        name = _PREFIX.sub("", raw_name)
        if name in _ESM1_ONLY:
            raise EsmCheckpointError(
                f"{source}: {raw_name!r} belongs to ESM-1/ESM-1b (learned positions); only "
                "ESM-2 checkpoints (rotary positions) are supported"
            )
        if name.startswith("contact_head."):
            state.dropped.append(raw_name)
        elif name == "lm_head.weight":
            tied_output = (raw_name, tensor)
            state.dropped.append(raw_name)
        elif _ROTARY.match(name):
            state.inv_freq.append(tensor)
            state.dropped.append(raw_name)
        else:
            state.add(_FFN.sub(r"\1ffn.\2.", name), raw_name, tensor)
    if tied_output is not None and "embed_tokens.weight" in state.tensors:
        name, tensor = tied_output
        if not torch.equal(tensor, state.tensors["embed_tokens.weight"]):
            raise EsmCheckpointError(
                f"{source}: {name!r} differs from the token embedding; wensu ties the output "
                "projection to embed_tokens as ESM-2 does, so this is not an ESM-2 checkpoint"
            )
    return state


def from_fair_esm(
    checkpoint: Mapping[str, Any],
    *,
    num_heads: int | None = None,
    attention: AttentionConfig | Mapping | None = None,
    source: str = "fair-esm state dict",
):
    """An `Encoder` (eval mode) holding a fair-esm ESM-2 checkpoint.

    `checkpoint` is the loaded file (`{"model": ..., "cfg"/"args": ...}`) or a bare state dict
    (fair-esm names, with or without the `encoder.sentence_encoder.` prefix). The architecture
    comes from `cfg`/`args` when present and otherwise from the tensor shapes (heads from the
    published ESM-2 sizes unless `num_heads` is given). `attention` selects the wensu attention
    backend/window (default: dense, i.e. exactly ESM-2).
    """
    state_dict, hparams = split_checkpoint(checkpoint)
    state = rename_fair_esm(state_dict, source)
    num_layers = count_layers(state.tensors)
    if num_layers == 0:
        raise EsmCheckpointError(
            f"{source}: no 'layers.N.' tensors; not a fair-esm ESM-2 state dict "
            f"(first keys: {list(state_dict)[:5]})"
        )
    d_model = shape_of(state, "embed_tokens.weight")[1]
    ffn_dim = shape_of(state, "layers.0.ffn.fc1.weight")[0]
    layers = hparams.get("encoder_layers", hparams.get("layers", num_layers))
    width = hparams.get("encoder_embed_dim", hparams.get("embed_dim", d_model))
    if (layers, width) != (num_layers, d_model):
        raise EsmCheckpointError(
            f"{source}: config says {layers} layers of width {width}, the weights have "
            f"{num_layers} layers of width {d_model}"
        )
    heads = num_heads or hparams.get("encoder_attention_heads", hparams.get("attention_heads"))
    if heads is None:
        heads = esm2_num_heads(num_layers, d_model, source)
    config = make_config(
        state,
        num_layers=num_layers,
        d_model=d_model,
        num_heads=int(heads),
        ffn_dim=ffn_dim,
        token_dropout=bool(hparams.get("token_dropout", True)),
        attention=attention,
    )
    return build_encoder(config, state)
