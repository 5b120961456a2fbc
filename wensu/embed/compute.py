"""Turning token batches into per-sequence embeddings (the forward passes of ``wensu-embed``).

Sequences up to the model's trained context (``max_length`` residues) run in length-sorted,
padded batches. Longer sequences take one of two paths:

Models configured with the ``flex`` backend run with ``chunked`` on CPU (same attention
pattern; compiled CPU FlexAttention would build a kernel per distinct sequence length).

* windowed model (``attention.window`` set): the whole sequence in one forward pass through a
  twin encoder that shares the weights but uses the ``chunked`` attention backend, so memory is
  linear in L; the result equals the dense backend with the same window (same attention pattern).
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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.embed.batching import SPECIAL_TOKENS_PER_SEQUENCE, plan_windows
from wensu.embed.file_format import SequenceEmbedding
from wensu.model import Encoder
from wensu.model.moe import unlimited_expert_capacity


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
        self._long_encoder: Encoder | None = None

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
            if self._long_encoder is None:
                self._long_encoder = chunked_twin(self.encoder)
            tokens = torch.from_numpy(self._encode(sequence)).to(self.device)[None]
            representations = self._forward(self._long_encoder, tokens)
            return {
                layer: self._pool(rep[0, 1:-1], rep[0, 0]) for layer, rep in representations.items()
            }
        return self._embed_stitched(sequence)

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
