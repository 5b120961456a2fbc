"""Frozen-encoder features held in memory for a set of sequences.

Forward passes go through :class:`wensu.embed.compute.SequenceEmbedder` with the settings that
:class:`wensu.embed.settings.EmbedSettings` derives (the code behind ``wensu-embed``), so probes
see exactly the vectors a user would embed: length-sorted batches of at most ``max_tokens``
padded tokens, and sequences longer than the trained context handled as ``wensu-embed`` does
(chunked attention for windowed models, stitched windows otherwise).
Identical sequences are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.embed.batching import token_budget_batches
from wensu.embed.compute import SequenceEmbedder, resolve_layers
from wensu.embed.settings import EmbedSettings
from wensu.model import Encoder
from wensu.progress import progress_bar


@dataclass
class FeatureSettings:
    """Which layer to read and how to batch; ``max_length`` is the trained context (residues)."""

    layer: int = -1
    max_tokens: int = 16384
    max_length: int = 1022
    device: str = "cpu"
    show_progress: bool = True


class EncoderFeatures:
    """Per-residue, mean-pooled and attention features of one frozen encoder."""

    def __init__(self, name: str, encoder: Encoder, alphabet: Alphabet, settings: FeatureSettings):
        self.name = name
        self.encoder = encoder.eval()
        self.alphabet = alphabet
        self.settings = settings
        self.device = torch.device(settings.device)
        self.layer = resolve_layers([settings.layer], encoder.cfg.num_layers)[0]
        self._embedders: dict[str, SequenceEmbedder] = {}

    @property
    def window(self) -> int | None:
        """Attention window of the encoder (None = dense)."""
        return self.encoder.cfg.attention.window

    def _embedder(self, pooling: str) -> SequenceEmbedder:
        if pooling not in self._embedders:
            s = self.settings
            options = EmbedSettings(
                layers=(self.layer,),
                pooling=(pooling,),
                max_tokens=s.max_tokens,
                max_length=s.max_length,
            )
            compute = options.compute_settings(self.encoder.cfg.num_layers, s.max_length)
            self._embedders[pooling] = SequenceEmbedder(
                self.encoder, self.alphabet, compute, self.device
            )
        return self._embedders[pooling]

    def _compute(self, sequences: Sequence[str], pooling: str, desc: str) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(s.upper() for s in sequences))
        embedder = self._embedder(pooling)
        short = [s for s in unique if not embedder.is_long(len(s))]
        long = [s for s in unique if embedder.is_long(len(s))]
        dtype = np.float16 if pooling == "per_residue" else np.float32
        out: dict[str, np.ndarray] = {}
        bar = progress_bar(
            total=len(unique), desc=f"{desc} [{self.name}]", enabled=self.settings.show_progress
        )
        for batch in token_budget_batches([len(s) for s in short], self.settings.max_tokens):
            seqs = [short[i] for i in batch]
            for seq, result in zip(seqs, embedder.embed_batch(seqs), strict=True):
                out[seq] = result[self.layer][pooling].astype(dtype)
            bar.update(len(seqs))
        for seq in long:
            out[seq] = embedder.embed_long(seq)[self.layer][pooling].astype(dtype)
            bar.update(1)
        bar.close()
        return out

    def per_residue(self, sequences: Sequence[str], desc: str = "embed") -> list[np.ndarray]:
        """[L, d] float16 representations (no special tokens) for each sequence."""
        table = self._compute(sequences, "per_residue", desc)
        return [table[s.upper()] for s in sequences]

    def mean(self, sequences: Sequence[str], desc: str = "embed") -> np.ndarray:
        """[N, d] float32 mean over residues of each sequence."""
        table = self._compute(sequences, "mean", desc)
        return np.stack([table[s.upper()] for s in sequences])

    def attention(self, sequence: str) -> torch.Tensor:
        """[layers, heads, L, L] attention probabilities without ``<cls>``/``<eos>``."""
        tokens = torch.from_numpy(self.alphabet.encode(sequence)).to(self.device)[None]
        with torch.inference_mode():
            out = self.encoder(tokens, need_attn=True, return_logits=False)
        attentions = out["attentions"]
        if attentions is None:
            raise RuntimeError(f"encoder '{self.name}' returned no attention maps")
        return attentions[0, :, :, 1:-1, 1:-1].float().cpu()
