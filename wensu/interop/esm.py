"""Shared core of the ESM-2 converters: wensu-named tensors + config -> a loaded `Encoder`.

The fair-esm and Hugging Face readers (`fair_esm.py`, `hf.py`) only rename tensors to wensu's
names (which are fair-esm's, with the dense FFN under `ffn.`) and describe the architecture;
everything that checks a conversion lives here, so both layouts fail the same way: a missing
tensor, an unknown tensor, a shape mismatch or an unsupported architecture raises
`EsmCheckpointError` naming the source file and the tensors concerned.

Tensors that ESM-2 checkpoints carry but a wensu encoder has no use for (contact-regression
head, pooler, position-id buffers, the tied copy of the output embedding) are dropped and
listed in `ConvertedState.dropped`; the caller never loses a tensor silently.

Rotary inverse frequencies: the official ESM-2 weights were trained with float16 parameters, so
the `inv_freq` buffers in their files hold float16-rounded values that the original models use.
`build_encoder` copies them into the encoder when it has a rotary frequency buffer and otherwise
warns when they differ from the recomputed float32 values (outputs then differ slightly from the
original model, more so at long positions).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from wensu.model.config import AttentionConfig, EncoderConfig
from wensu.model.encoder import Encoder
from wensu.model.rotary import inverse_frequencies

# (num_layers, d_model) -> attention heads of the published ESM-2 models (8M .. 15B).
ESM2_NUM_HEADS: dict[tuple[int, int], int] = {
    (6, 320): 20,
    (12, 480): 20,
    (30, 640): 20,
    (33, 1280): 20,
    (36, 2560): 40,
    (48, 5120): 40,
}
ESM2_VOCAB_SIZE = 33
ESM2_PADDING_IDX = 1
ESM2_MASK_IDX = 32
ESM2_LAYER_NORM_EPS = 1e-5

_LAYER_INDEX = re.compile(r"^layers\.(\d+)\.")


class EsmCheckpointError(ValueError):
    """An ESM-2 checkpoint cannot be converted; the message names the file and the reason."""


@dataclass
class ConvertedState:
    """Tensors under wensu names, where each came from, and what was deliberately dropped.

    `inv_freq` holds the checkpoint's rotary inverse frequencies (one per layer when the file
    stores them per layer), `None` when the file has none.
    """

    source: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    inv_freq: list[Tensor] = field(default_factory=list)

    def add(self, wensu_name: str, source_name: str, tensor: Tensor) -> None:
        if wensu_name in self.tensors:
            raise EsmCheckpointError(
                f"{self.source}: tensors {self.origin[wensu_name]!r} and {source_name!r} both "
                f"map to {wensu_name!r}; the file mixes two layouts"
            )
        self.tensors[wensu_name] = tensor
        self.origin[wensu_name] = source_name


def count_layers(names: Iterable[str]) -> int:
    """Number of transformer layers named `layers.<i>.` (0 when none)."""
    indices = {int(m.group(1)) for name in names if (m := _LAYER_INDEX.match(name))}
    return max(indices) + 1 if indices else 0


def esm2_num_heads(num_layers: int, d_model: int, source: str) -> int:
    """Heads of a published ESM-2 size; the state dict alone cannot tell the head count."""
    try:
        return ESM2_NUM_HEADS[(num_layers, d_model)]
    except KeyError:
        raise EsmCheckpointError(
            f"{source}: {num_layers} layers of width {d_model} is not a published ESM-2 size "
            f"({sorted(ESM2_NUM_HEADS)}), so the number of attention heads is unknown; pass "
            "num_heads=... or a checkpoint that carries its config"
        ) from None


def shape_of(state: ConvertedState, name: str) -> tuple[int, ...]:
    if name not in state.tensors:
        raise EsmCheckpointError(f"{state.source}: required tensor for {name!r} is missing")
    return tuple(state.tensors[name].shape)


def make_config(
    state: ConvertedState,
    *,
    num_layers: int,
    d_model: int,
    num_heads: int,
    ffn_dim: int,
    token_dropout: bool,
    rotary_base: float = 10000.0,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    layer_norm_eps: float = ESM2_LAYER_NORM_EPS,
    attention: AttentionConfig | Mapping | None = None,
) -> EncoderConfig:
    """`EncoderConfig` for an ESM-2 checkpoint, checked against the tensors it must load."""
    found_layers = count_layers(state.tensors)
    if found_layers != num_layers:
        raise EsmCheckpointError(
            f"{state.source}: config says {num_layers} layers but the weights have {found_layers}"
        )
    embed = shape_of(state, "embed_tokens.weight")
    if embed != (ESM2_VOCAB_SIZE, d_model):
        raise EsmCheckpointError(
            f"{state.source}: token embedding {state.origin['embed_tokens.weight']!r} has shape "
            f"{list(embed)}, expected [{ESM2_VOCAB_SIZE}, {d_model}] (ESM-2 alphabet x width)"
        )
    if attention is None:
        attention = AttentionConfig()
    elif isinstance(attention, Mapping):
        attention = AttentionConfig.from_dict(attention)
    return EncoderConfig(
        num_layers=num_layers,
        d_model=d_model,
        num_heads=num_heads,
        ffn_dim=ffn_dim,
        vocab_size=ESM2_VOCAB_SIZE,
        padding_idx=ESM2_PADDING_IDX,
        mask_idx=ESM2_MASK_IDX,
        dropout=float(dropout),
        attention_dropout=float(attention_dropout),
        token_dropout=bool(token_dropout),
        rotary_base=float(rotary_base),
        layer_norm_eps=float(layer_norm_eps),
        ffn="dense",
        attention=attention,
    )


def _format_names(names: Iterable[str], origin: Mapping[str, str] | None = None) -> str:
    names = sorted(names)
    shown = [f"{n} (from {origin[n]})" if origin and n in origin else n for n in names[:8]]
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return ", ".join(shown) + more


def _with_checkpoint_rotary(config: EncoderConfig, state: ConvertedState) -> EncoderConfig:
    """Carry the checkpoint's rotary frequencies in the config when they differ from the formula.

    Published ESM-2 files hold float16-rounded `inv_freq` values that the original models use;
    recomputing them in float32 would shift logits by ~1e-4 on long inputs.
    """
    if not state.inv_freq:
        return config
    expected = inverse_frequencies(config.head_dim, config.rotary_base)
    for value in state.inv_freq:
        if value.shape != expected.shape:
            raise EsmCheckpointError(
                f"{state.source}: rotary inv_freq has shape {list(value.shape)}, expected "
                f"{list(expected.shape)} for head dimension {config.head_dim}"
            )
    stored = state.inv_freq[0].float()
    if any(not torch.equal(v.float(), stored) for v in state.inv_freq[1:]):
        raise EsmCheckpointError(f"{state.source}: layers store different rotary inv_freq values")
    if torch.equal(stored, expected.float()):
        return config
    return dataclasses.replace(config, rotary_inv_freq=stored.tolist())


def build_encoder(config: EncoderConfig, state: ConvertedState):
    """An `Encoder(config)` holding exactly `state.tensors`, in eval mode.

    Raises `EsmCheckpointError` naming missing tensors, unknown tensors and shape mismatches.
    """
    config = _with_checkpoint_rotary(config, state)
    encoder = Encoder(config)
    expected = {
        name: tensor
        for name, tensor in encoder.state_dict().items()
        if not name.endswith("inv_freq")
    }
    missing = set(expected) - set(state.tensors)
    unexpected = set(state.tensors) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors: {_format_names(missing)}")
        if unexpected:
            parts.append(f"unknown tensors: {_format_names(unexpected, state.origin)}")
        raise EsmCheckpointError(
            f"{state.source}: not a complete ESM-2 checkpoint ({'; '.join(parts)})"
        )
    mismatched = [
        f"{state.origin[name]} has shape {list(state.tensors[name].shape)}, "
        f"expected {list(expected[name].shape)}"
        for name in sorted(expected)
        if tuple(state.tensors[name].shape) != tuple(expected[name].shape)
    ]
    if mismatched:
        raise EsmCheckpointError(f"{state.source}: shape mismatch: " + "; ".join(mismatched[:8]))
    encoder.load_state_dict(state.tensors, strict=False)
    return encoder.eval()
