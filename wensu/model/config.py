"""Encoder configuration: plain dataclasses that round-trip through plain dicts (and YAML).

`EncoderConfig.from_dict(OmegaConf.to_container(cfg.model))` is how Hydra configs become a
model, and `to_dict()` is what checkpoints store, so both sides only ever see plain Python types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from wensu.model.attention import available_backends

FFN_KINDS = ("dense", "moe")
# Backends whose work is organised in query/key blocks of attention.block_size tokens.
BLOCKED_BACKENDS = ("chunked", "flex")


class ConfigError(ValueError):
    """An encoder or attention configuration is invalid; the message names the field and why."""


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value: Any, low: float, high: float | None = None) -> float:
    """Check low <= value (< high) and return it as a float."""
    in_range = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and value >= low
        and (high is None or value < high)
    )
    if not in_range:
        bounds = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be a number {bounds}, got {value!r}")
    return float(value)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _build(cls: type, data: Any, source: str | None, what: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, naming `source` in every error."""
    where = f" (in {source})" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be a mapping, got {data!r}{where}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} field(s) {unknown}{where}; known: {sorted(known)}")
    try:
        return cls(**dict(data))
    except ConfigError as error:
        raise ConfigError(f"{error}{where}") from None


class PlainDictConfig:
    """``to_dict``/``from_dict`` for the config dataclasses; ``config_name`` names the kind of
    config in errors (``unknown model config field(s) ...``)."""

    config_name: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of python scalars, safe for `torch.load(weights_only=True)`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Self:
        """Build from a plain mapping such as a resolved Hydra node.

        Missing fields take their defaults; unknown fields or invalid values raise
        `ConfigError` naming the field, the reason and `source` (a file or checkpoint).
        """
        return _build(cls, data, source, cls.config_name)


@dataclass
class AttentionConfig(PlainDictConfig):
    """Which keys each query sees and which backend computes it.

    Query i sees key j iff |i - j| <= window, or i < num_global, or j < num_global, and j is
    not padding; `window=None` is full (dense) attention. `block_size` is the query block
    length of the `chunked` backend (`flex` uses its own 128-token sparse blocks and
    `block_size` when it falls back to `chunked`); a window of at least one block must be a
    whole number of blocks.
    """

    config_name: ClassVar[str] = "attention config"

    backend: str = "dense"
    window: int | None = None
    num_global: int = 1
    block_size: int = 128

    def __post_init__(self) -> None:
        if self.backend not in available_backends():
            raise ConfigError(
                f"attention.backend {self.backend!r} is unknown; "
                f"choose one of {list(available_backends())}"
            )
        if self.window is not None:
            _check_int("attention.window", self.window, 0)
        _check_int("attention.num_global", self.num_global, 0)
        _check_int("attention.block_size", self.block_size, 1)
        self._check_blocks_fit_window()

    def _check_blocks_fit_window(self) -> None:
        """Blocked backends score whole key blocks: a window of w >= block_size tokens that is
        not a multiple of block_size would score up to a block of keys per side for nothing."""
        window, block = self.window, self.block_size
        if self.backend not in BLOCKED_BACKENDS or window is None or window < block:
            return
        if window % block:
            divisors = [d for d in range(min(block, window), 0, -1) if window % d == 0][:1]
            raise ConfigError(
                f"attention.window={window} is not a multiple of attention.block_size={block}: "
                f"the {self.backend} backend scores whole blocks of {block} keys; use "
                f"window={window // block * block} or {(window // block + 1) * block}, or "
                f"block_size={divisors[0]}"
            )

    @classmethod
    def coerce(cls, value: Any) -> AttentionConfig:
        """``value`` as an AttentionConfig: itself, or built from a mapping."""
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if not isinstance(value, AttentionConfig):
            raise ConfigError(f"attention must be a mapping, got {value!r}")
        return value


@dataclass
class EncoderConfig(PlainDictConfig):
    """Shape and behaviour of a `wensu.model.Encoder` (ESM-2-style: pre-LN, rotary, tied head).

    `EncoderConfig.from_dict` builds one from a plain mapping such as a resolved Hydra `model`
    node; `to_dict` is what checkpoints store.
    """

    config_name: ClassVar[str] = "model config"

    num_layers: int = 6
    d_model: int = 320
    num_heads: int = 20
    ffn_dim: int = 1280
    vocab_size: int = 33
    padding_idx: int = 1
    mask_idx: int = 32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    token_dropout: bool = True
    rotary_base: float = 10000.0
    # Explicit rotary inverse frequencies (head_dim / 2 values), e.g. the float16-rounded
    # `inv_freq` buffers that published ESM-2 checkpoints carry; None computes them in float32.
    rotary_inv_freq: list[float] | None = None
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    activation_checkpointing: bool = False
    ffn: str = "dense"
    moe_num_experts: int = 8
    moe_top_k: int = 2
    moe_capacity_factor: float = 1.25
    moe_aux_loss_weight: float = 0.01
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        self.attention = AttentionConfig.coerce(self.attention)
        for name in ("num_layers", "d_model", "num_heads", "ffn_dim", "vocab_size"):
            _check_int(name, getattr(self, name), 1)
        for name in ("padding_idx", "mask_idx"):
            _check_int(name, getattr(self, name), 0)
            if getattr(self, name) >= self.vocab_size:
                raise ConfigError(
                    f"{name} ({getattr(self, name)}) must be < vocab_size ({self.vocab_size})"
                )
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"head dimension d_model/num_heads = {self.head_dim} must be even (rotary)"
            )
        if self.rotary_inv_freq is not None:
            values = self.rotary_inv_freq
            if (
                isinstance(values, str | bytes)
                or not isinstance(values, list | tuple)
                or len(values) != self.head_dim // 2
            ):
                raise ConfigError(
                    f"rotary_inv_freq must be a list of head_dim/2 = {self.head_dim // 2} numbers"
                )
            self.rotary_inv_freq = [_check_number("rotary_inv_freq", v, 0.0) for v in values]
        self.dropout = _check_number("dropout", self.dropout, 0.0, 1.0)
        self.attention_dropout = _check_number("attention_dropout", self.attention_dropout, 0, 1)
        _check_bool("token_dropout", self.token_dropout)
        _check_bool("activation_checkpointing", self.activation_checkpointing)
        for name in ("rotary_base", "layer_norm_eps", "init_std"):
            setattr(self, name, _check_number(name, getattr(self, name), 0.0))
            if getattr(self, name) == 0:
                raise ConfigError(f"{name} must be positive, got 0")
        if self.ffn not in FFN_KINDS:
            raise ConfigError(f"ffn {self.ffn!r} is unknown; choose one of {list(FFN_KINDS)}")
        _check_int("moe_num_experts", self.moe_num_experts, 1)
        _check_int("moe_top_k", self.moe_top_k, 1)
        if self.moe_top_k > self.moe_num_experts:
            raise ConfigError(
                f"moe_top_k ({self.moe_top_k}) must be <= moe_num_experts ({self.moe_num_experts})"
            )
        self.moe_capacity_factor = _check_number("moe_capacity_factor", self.moe_capacity_factor, 0)
        self.moe_aux_loss_weight = _check_number("moe_aux_loss_weight", self.moe_aux_loss_weight, 0)
        if self.attention.backend == "flex" and self.attention_dropout > 0:
            raise ConfigError(
                "attention.backend 'flex' has no attention dropout; set attention_dropout: 0 "
                "or use the dense or chunked backend"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads
