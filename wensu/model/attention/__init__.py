"""Attention: one pattern (`pattern.py`), several backends selected by name.

`dense` (SDPA + materialised mask), `chunked` (blocked sliding window, linear memory, pure
PyTorch) and `flex` (FlexAttention block-sparse kernels) give the same outputs and gradients
for the same pattern. New backends register with `register_backend`.
"""

from __future__ import annotations

from wensu.model.attention.base import AttentionBackend, PreparedAttention
from wensu.model.attention.chunked import ChunkedAttention
from wensu.model.attention.dense import DenseAttention, DensePrepared
from wensu.model.attention.pattern import AttentionPattern

try:  # FlexAttention ships with torch >= 2.5
    from wensu.model.attention.flex import FlexAttention
except ImportError:  # pragma: no cover - older torch: dense and chunked remain available
    FlexAttention = None

_BACKENDS: dict[str, type[AttentionBackend]] = {}


def register_backend(backend: type[AttentionBackend]) -> type[AttentionBackend]:
    """Make `backend` selectable as `attention.backend: <backend.name>`."""
    _BACKENDS[backend.name] = backend
    return backend


def available_backends() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def build_backend(name: str, pattern: AttentionPattern, block_size: int = 128) -> AttentionBackend:
    """Instantiate the backend registered under `name`."""
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown attention backend {name!r}; choose one of {available_backends()}"
        )
    return _BACKENDS[name](pattern, block_size)


for _backend in (DenseAttention, ChunkedAttention, FlexAttention):
    if _backend is not None:
        register_backend(_backend)

__all__ = [
    "AttentionBackend",
    "AttentionPattern",
    "ChunkedAttention",
    "DenseAttention",
    "DensePrepared",
    "FlexAttention",
    "PreparedAttention",
    "available_backends",
    "build_backend",
    "register_backend",
]
