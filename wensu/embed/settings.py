"""What to embed and how: one :class:`EmbedSettings` shared by ``wensu-embed`` (its Hydra keys
are the field names, conf/embed.yaml), :func:`wensu.embed.embed` (its keyword options) and the
probes (:class:`wensu.probes.common.features.EncoderFeatures`), so all three turn the same
options into the same :class:`~wensu.embed.compute.ComputeSettings`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from wensu.embed.compute import ComputeSettings, resolve_layers
from wensu.embed.file_format import KINDS
from wensu.embed.writer import FORMATS

DEFAULT_MAX_LENGTH = 1022
PRECISIONS = ("fp32", "bf16", "auto")
PER_RESIDUE_DTYPES = ("float32", "float16")


class EmbedError(ValueError):
    """A user-facing problem with the embedding request (options, input, checkpoint, output)."""


def _as_list(value: Any) -> list:
    """``layers=-1`` and ``pooling=mean`` on the command line mean one-element lists."""
    return list(value) if isinstance(value, list | tuple) else [value]


# How command-line values become field values (``max_length``, ``window``, ``stride`` stay as
# given: None or a number).
_FROM_OPTION = {
    "layers": _as_list,
    "pooling": _as_list,
    "max_tokens": int,
    "devices": int,
    "sort_buffer_residues": int,
    "segment_sequences": int,
    "device": str,
    "precision": str,
    "format": str,
    "per_residue_dtype": str,
    "dedup": bool,
    "progress": bool,
}


@dataclass(frozen=True)
class EmbedSettings:
    """Every option of an embedding run except the checkpoint, input and output.

    Attributes:
        layers: layers to keep (0 = embedding output, -1 = final normed output).
        pooling: any of ``mean``, ``per_residue``, ``cls``.
        max_tokens: padded-token budget per batch (a longer single sequence runs alone).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``devices``: worker processes.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA, else fp32).
        format: ``h5`` (one file) or ``npz``/``pt`` (a folder of per-sequence files).
        max_length: trained context in residues (default: from the checkpoint, else 1022).
        window, stride: stitched windows for over-long sequences of dense models.
        dedup: keep the first of records with the same id instead of failing.
    """

    layers: Sequence[int] = (-1,)
    pooling: Sequence[str] = ("mean",)
    max_tokens: int = 8192
    device: str = "auto"
    devices: int = 1
    precision: str = "fp32"
    format: str = "h5"
    per_residue_dtype: str = "float32"
    max_length: int | None = None
    window: int | None = None
    stride: int | None = None
    dedup: bool = False
    sort_buffer_residues: int = 20_000_000
    segment_sequences: int = 1000
    progress: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EmbedSettings:
        """Settings from a plain mapping such as the resolved ``wensu-embed`` config (extra
        keys such as ``checkpoint`` are ignored; scalars become one-element lists)."""
        known = {f.name for f in fields(cls)}
        return cls(
            **{
                key: _FROM_OPTION.get(key, lambda v: v)(value)
                for key, value in options.items()
                if key in known
            }
        )

    def validate(self) -> None:
        """Raise :class:`EmbedError` naming the first invalid option."""
        if self.devices < 1 or self.max_tokens < 1:
            raise EmbedError(
                f"devices and max_tokens must be >= 1, got {self.devices} and {self.max_tokens}"
            )
        if self.devices > 1 and self.device not in ("auto", "cpu", "cuda"):
            raise EmbedError(
                f"devices={self.devices} needs device=auto, cpu or cuda, got {self.device!r}"
            )
        unknown = [p for p in self.pooling if p not in KINDS]
        if unknown or not self.pooling:
            raise EmbedError(
                f"pooling must be a non-empty subset of {list(KINDS)}, got {list(self.pooling)}"
            )
        if self.format not in FORMATS:
            raise EmbedError(f"format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.precision not in PRECISIONS:
            raise EmbedError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.per_residue_dtype not in PER_RESIDUE_DTYPES:
            raise EmbedError(
                f"per_residue_dtype must be one of {list(PER_RESIDUE_DTYPES)}, "
                f"got {self.per_residue_dtype!r}"
            )

    def compute_settings(self, num_layers: int, trained_context: int | None) -> ComputeSettings:
        """The forward-pass settings for a model of ``num_layers`` layers: absolute layers,
        pooling in file order, the context (option, else the checkpoint's, else 1022) and the
        stitched windows for over-long sequences of dense models."""
        context = self.max_length or trained_context or DEFAULT_MAX_LENGTH
        window = self.window or context
        stride = self.stride or max(1, window // 2)
        if context < 1 or window < 1 or not 1 <= stride <= window:
            raise EmbedError(
                f"need max_length >= 1 and 1 <= stride <= window, got max_length={context}, "
                f"window={window}, stride={stride}"
            )
        return ComputeSettings(
            layers=resolve_layers(self.layers, num_layers),
            pooling=tuple(kind for kind in KINDS if kind in self.pooling),
            max_length=context,
            window=window,
            stride=stride,
            max_tokens=self.max_tokens,
            precision=self.precision,
        )
