"""The encoder, its configuration and its attention backends."""

from __future__ import annotations

from wensu.model.config import AttentionConfig, ConfigError, EncoderConfig
from wensu.model.encoder import Encoder, LMHead, build_encoder, count_parameters

__all__ = [
    "AttentionConfig",
    "ConfigError",
    "Encoder",
    "EncoderConfig",
    "LMHead",
    "build_encoder",
    "count_parameters",
]
