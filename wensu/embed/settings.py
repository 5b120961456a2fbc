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
EXECUTORS = ("local", "ray")


class EmbedError(ValueError):
    """A user-facing problem with the embedding request (options, input, checkpoint, output)."""


def _as_list(value: Any) -> list:
    """``layers=-1`` and ``pooling=mean`` on the command line mean one-element lists."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _strict_bool(value: Any) -> bool:
    """``true``/``false`` only: ``bool("maybe")`` would silently be True."""
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError("expected true or false")


def _strict_int(value: Any) -> int:
    """Integers only: ``int(2.7)`` would silently truncate."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected an integer")
    return int(value)


# How command-line values become field values (``max_length``, ``window``, ``stride`` stay as
# given: None or a number).
_FROM_OPTION = {
    "layers": _as_list,
    "pooling": _as_list,
    "max_tokens": _strict_int,
    "devices": _strict_int,
    "sort_buffer_residues": _strict_int,
    "segment_sequences": _strict_int,
    "device": str,
    "precision": str,
    "format": str,
    "per_residue_dtype": str,
    "dedup": _strict_bool,
    "beyond_trained_context": _strict_bool,
    "progress": _strict_bool,
    "executor": str,
    "ray_address": lambda value: None if value is None else str(value),
}


@dataclass(frozen=True)
class EmbedSettings:
    """Every option of an embedding run except the checkpoint, input and output.

    Attributes:
        layers: layers to keep (0 = embedding output, -1 = final normed output).
        pooling: any of ``mean``, ``per_residue``, ``cls``.
        max_tokens: padded-token budget per batch (a longer single sequence runs alone).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``devices``: workers (processes, or
            Ray tasks with ``executor=ray``), one model replica each.
        executor: ``local`` (this machine) or ``ray`` (the workers as Ray tasks on the cluster at
            ``ray_address``, else ``$RAY_ADDRESS``, else a local Ray instance; the output path
            must be on storage every node sees).
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA, else fp32).
        format: ``h5`` (one file) or ``npz``/``pt`` (a folder of per-sequence files).
        max_length: trained context in residues (default: from the checkpoint, else 1022).
        window, stride: stitched windows for over-long sequences of dense models.
        dedup: keep the first of records with the same id instead of failing.
        beyond_trained_context: accept ``max_length``/``window`` longer than the context the
            checkpoint was trained at (refused by default: the model never saw such inputs).
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
    beyond_trained_context: bool = False
    sort_buffer_residues: int = 20_000_000
    segment_sequences: int = 1000
    progress: bool = True
    executor: str = "local"
    ray_address: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EmbedSettings:
        """Settings from a plain mapping such as the resolved ``wensu-embed`` config (extra
        keys such as ``checkpoint`` are ignored; scalars become one-element lists)."""
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in options.items():
            if key not in known:
                continue
            try:
                values[key] = _FROM_OPTION.get(key, lambda v: v)(value)
            except (TypeError, ValueError) as error:
                raise EmbedError(f"{key}={value!r}: {error}") from None
        return cls(**values)

    def validate(self) -> None:
        """Raise :class:`EmbedError` naming the first invalid option."""
        if self.devices < 1 or self.max_tokens < 1:
            raise EmbedError(
                f"devices and max_tokens must be >= 1, got {self.devices} and {self.max_tokens}"
            )
        for key in ("sort_buffer_residues", "segment_sequences"):
            if getattr(self, key) < 1:
                raise EmbedError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_length", "window", "stride"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise EmbedError(f"{key}={value!r}: expected an integer (or null)")
        if self.devices > 1 and self.device not in ("auto", "cpu", "cuda"):
            raise EmbedError(
                f"devices={self.devices} needs device=auto, cpu or cuda, got {self.device!r}"
            )
        unknown = [p for p in self.pooling if p not in KINDS]
        if unknown or not self.pooling:
            raise EmbedError(
                f"pooling must be a non-empty subset of {list(KINDS)}, got {list(self.pooling)}"
            )
        if self.executor not in EXECUTORS:
            raise EmbedError(f"executor must be one of {list(EXECUTORS)}, got {self.executor!r}")
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
        longest = max(context, window)
        if trained_context and longest > trained_context and not self.beyond_trained_context:
            key = "window" if self.window and window > trained_context else "max_length"
            raise EmbedError(
                f"{key}={longest} is longer than the {trained_context} residues the model was "
                f"trained at: its embeddings would come from inputs it never saw; use "
                f"{key}<={trained_context}, or beyond_trained_context=true to accept that "
                "(recorded in the output)"
            )
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
