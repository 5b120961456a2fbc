"""Turning token batches into per-sequence embeddings (the forward passes of ``wensu-embed``).

Sequences up to the model's trained context (``max_length`` residues) run in length-sorted,
padded batches. Longer sequences take one of two paths:

Models configured with the ``flex`` backend run with ``chunked`` on CPU (same attention
pattern; compiled CPU FlexAttention would build a kernel per distinct sequence length).

* windowed model (``attention.window`` set): the whole sequence streamed layer by layer over
  chunks of positions (:func:`wensu.model.streaming.stream_encode`): memory is the residual
  stream (L x d_model floats) plus per-chunk work, about 1.3 KB per residue for the 8M shape, and
  the result equals the dense backend with the same window (same attention pattern). ``mean`` is
  accumulated chunk by chunk; ``per_residue`` goes into a disk-backed array (``np.memmap`` in the
  temporary directory) once it is larger than ``RESIDUE_BUFFER_IN_MEMORY`` bytes, and the writer
  copies it into the HDF5 file in row blocks.
* dense model: overlapping windows of ``window`` residues every ``stride`` residues (the last
  window is shifted to end at the sequence end), each wrapped as ``<cls> ... <eos>`` and run
  separately. A residue's vector is the average over the windows that contain it, so residues
  covered by one window equal that window's forward pass exactly, and residues in overlaps are an
  average of contexts (they differ from a hypothetical full-length dense pass by however much the
  model depends on context beyond the window). ``mean`` is the mean of the stitched per-residue
  vectors; ``cls`` is the mean of the windows' ``<cls>`` vectors.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.embed.batching import SPECIAL_TOKENS_PER_SEQUENCE, plan_windows
from wensu.embed.file_format import SequenceEmbedding
from wensu.model import Encoder
from wensu.model.moe import unlimited_expert_capacity
from wensu.model.streaming import stream_encode

# Per-residue outputs of one long sequence above this size live in a disk-backed array.
RESIDUE_BUFFER_IN_MEMORY = 256 * 2**20


@dataclass(frozen=True)
class ComputeSettings:
    """What to compute and how; ``layers`` are absolute layer numbers."""

    layers: tuple[int, ...]
    pooling: tuple[str, ...]
    max_length: int
    window: int
    stride: int
    max_tokens: int
    precision: str = "fp32"


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Absolute, de-duplicated layer numbers (``-1`` = final layer = ``num_layers``)."""
    resolved: list[int] = []
    for layer in layers:
        if not -(num_layers + 1) <= int(layer) <= num_layers:
            raise ValueError(
                f"layer {layer} out of range for a model with {num_layers} layers "
                f"(use 0..{num_layers} or -1..-{num_layers + 1})"
            )
        absolute = int(layer) % (num_layers + 1)
        if absolute not in resolved:
            resolved.append(absolute)
    return tuple(resolved)


def chunked_twin(encoder: Encoder) -> Encoder:
    """An encoder sharing ``encoder``'s weights whose attention backend is ``chunked``."""
    cfg = encoder.cfg
    if cfg.attention.backend == "chunked":
        return encoder
    settings = cfg.to_dict()
    settings["attention"]["backend"] = "chunked"
    twin = Encoder(type(cfg).from_dict(settings))
    twin.load_state_dict(encoder.state_dict(), assign=True)
    return twin.to(next(encoder.parameters()).device).eval()


def stream_chunk(encoder: Encoder) -> int:
    """Positions per chunk of a streamed pass: a few windows wide (each chunk attends to its
    rows plus a window either side, so wider chunks waste less of the window's halo)."""
    return max(2048, 8 * int(encoder.cfg.attention.window or 0))


def residue_buffer(rows: int, d_model: int) -> np.ndarray:
    """A float32 [rows, d_model] array; disk-backed (temporary file) when it is large."""
    if rows * d_model * 4 <= RESIDUE_BUFFER_IN_MEMORY:
        return np.empty((rows, d_model), dtype=np.float32)
    with tempfile.TemporaryFile(prefix="wensu-per-residue-") as handle:
        # The mapping keeps the (already unlinked) file alive until the array is freed.
        return np.memmap(handle, dtype=np.float32, mode="w+", shape=(rows, d_model))


class SequenceEmbedder:
    """Runs an :class:`Encoder` in inference mode and pools its representations."""

    def __init__(
        self,
        encoder: Encoder,
        alphabet: Alphabet,
        settings: ComputeSettings,
        device: torch.device,
    ):
        encoder = encoder.to(device).eval()
        if encoder.cfg.attention.backend == "flex" and device.type == "cpu":
            # Compiled CPU FlexAttention builds one kernel per sequence length (seconds each);
            # chunked computes the same pattern without compiling.
            encoder = chunked_twin(encoder)
        self.encoder = encoder
        self.alphabet = alphabet
        self.settings = settings
        self.device = device
        self.windowed = encoder.cfg.attention.window is not None

    def is_long(self, length: int) -> bool:
        """Whether a sequence of ``length`` residues exceeds the trained context."""
        return length > self.settings.max_length

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, encoder: Encoder, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        with torch.inference_mode(), self._autocast(), unlimited_expert_capacity(encoder):
            out = encoder(tokens, repr_layers=self.settings.layers, return_logits=False)
        return {layer: out["representations"][layer].float() for layer in self.settings.layers}

    def _encode(self, residues: bytes | str, add_special: bool = True) -> np.ndarray:
        raw = residues.encode("ascii") if isinstance(residues, str) else residues
        ids = self.alphabet.encode_bytes(np.frombuffer(raw, dtype=np.uint8))
        if not add_special:
            return ids
        return np.concatenate(([self.alphabet.cls_idx], ids, [self.alphabet.eos_idx]))

    def _collate(self, token_rows: Sequence[np.ndarray]) -> torch.Tensor:
        width = max(len(row) for row in token_rows)
        batch = np.full((len(token_rows), width), self.alphabet.padding_idx, dtype=np.int64)
        for i, row in enumerate(token_rows):
            batch[i, : len(row)] = row
        return torch.from_numpy(batch).to(self.device, non_blocking=True)

    def embed_batch(self, sequences: Sequence[bytes | str]) -> list[SequenceEmbedding]:
        """Embed sequences that fit the trained context, padded into one batch."""
        token_rows = [self._encode(s) for s in sequences]
        tokens = self._collate(token_rows)
        representations = self._forward(self.encoder, tokens)
        results: list[SequenceEmbedding] = [{} for _ in sequences]
        for layer, rep in representations.items():
            pooled: dict[str, np.ndarray] = {}
            if "mean" in self.settings.pooling:
                # Each sequence's own residues, not a masked sum over the padded width: the
                # mean is then bit-identical whatever the batch (a resumed run re-batches).
                means = [rep[i, 1 : len(s) + 1].mean(0) for i, s in enumerate(sequences)]
                pooled["mean"] = torch.stack(means).cpu().numpy()
            if "cls" in self.settings.pooling:
                pooled["cls"] = rep[:, 0].cpu().numpy()
            per_residue = rep.cpu().numpy() if "per_residue" in self.settings.pooling else None
            for i, length in enumerate(len(s) for s in sequences):
                entry = {kind: values[i] for kind, values in pooled.items()}
                if per_residue is not None:
                    entry["per_residue"] = per_residue[i, 1 : length + 1]
                results[i][layer] = entry
        return results

    def embed_long(self, sequence: bytes | str) -> SequenceEmbedding:
        """Embed one sequence longer than the trained context (see the module docstring)."""
        if self.windowed:
            return self._embed_streamed(sequence)
        return self._embed_stitched(sequence)

    def _embed_streamed(self, sequence: bytes | str) -> SequenceEmbedding:
        tokens = torch.from_numpy(self._encode(sequence)).to(self.device)
        residues, d_model = len(tokens) - 2, self.encoder.cfg.d_model
        pooling = self.settings.pooling
        sums = {layer: torch.zeros(d_model, dtype=torch.float64) for layer in self.settings.layers}
        cls = {}
        per_residue = {
            layer: residue_buffer(residues, d_model)
            for layer in self.settings.layers
            if "per_residue" in pooling
        }

        def sink(layer: int, start: int, values: torch.Tensor) -> None:
            values = values.float()
            if start == 0:
                cls[layer] = values[0].cpu().numpy()
            first, last = max(start, 1), min(start + len(values), residues + 1)
            if first >= last:
                return
            rows = values[first - start : last - start]
            sums[layer] += rows.double().sum(0).cpu()
            if layer in per_residue:
                per_residue[layer][first - 1 : last - 1] = rows.cpu().numpy()

        with torch.inference_mode(), self._autocast(), unlimited_expert_capacity(self.encoder):
            stream_encode(
                self.encoder, tokens, self.settings.layers, sink, stream_chunk(self.encoder)
            )
        result: SequenceEmbedding = {}
        for layer in self.settings.layers:
            entry = {}
            if "mean" in pooling:
                entry["mean"] = (sums[layer] / max(residues, 1)).float().numpy()
            if "per_residue" in pooling:
                entry["per_residue"] = per_residue[layer]
            if "cls" in pooling:
                entry["cls"] = cls[layer]
            result[layer] = entry
        return result

    def _pool(self, per_residue: torch.Tensor, cls: torch.Tensor) -> dict[str, np.ndarray]:
        pooled: dict[str, np.ndarray] = {}
        if "mean" in self.settings.pooling:
            pooled["mean"] = per_residue.mean(0).cpu().numpy()
        if "per_residue" in self.settings.pooling:
            pooled["per_residue"] = per_residue.cpu().numpy()
        if "cls" in self.settings.pooling:
            pooled["cls"] = cls.cpu().numpy()
        return pooled

    def _embed_stitched(self, sequence: bytes | str) -> SequenceEmbedding:
        settings = self.settings
        residues = self._encode(sequence, add_special=False)
        windows = plan_windows(len(residues), settings.window, settings.stride)
        per_batch = max(1, settings.max_tokens // (settings.window + SPECIAL_TOKENS_PER_SEQUENCE))
        d_model = self.encoder.cfg.d_model
        sums = {
            layer: torch.zeros(len(residues), d_model, device=self.device)
            for layer in settings.layers
        }
        cls_sums = {layer: torch.zeros(d_model, device=self.device) for layer in settings.layers}
        counts = torch.zeros(len(residues), device=self.device)
        cls, eos = self.alphabet.cls_idx, self.alphabet.eos_idx
        for first in range(0, len(windows), per_batch):
            group = windows[first : first + per_batch]
            rows = [np.concatenate(([cls], residues[s:e], [eos])) for s, e in group]
            representations = self._forward(self.encoder, self._collate(rows))
            for row, (start, end) in enumerate(group):
                counts[start:end] += 1
                for layer, rep in representations.items():
                    sums[layer][start:end] += rep[row, 1 : end - start + 1]
                    cls_sums[layer] += rep[row, 0]
        return {
            layer: self._pool(sums[layer] / counts[:, None], cls_sums[layer] / len(windows))
            for layer in settings.layers
        }
