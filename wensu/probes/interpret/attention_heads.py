"""Which attention heads see contacts: per layer and head, the long-range precision at L of the
head's own symmetrised, APC-corrected attention map (no regression), averaged over structures.

Reuses the contact probe's pieces (:func:`wensu.probes.contacts.probe.attention_features`,
:func:`wensu.probes.contacts.probe.precision_at`), so a head's score is what the contact regression
would get if it put all its weight on that head.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from einops import rearrange

from wensu.probes.contacts.probe import RANGES, attention_features, precision_at


def head_precisions(
    attentions: torch.Tensor,
    contacts: np.ndarray,
    valid: np.ndarray,
    *,
    range_name: str = "long",
    fraction: int = 1,
) -> np.ndarray:
    """[layers, heads] P@L/``fraction`` in ``range_name`` of each head's APC map of one protein.

    ``attentions`` is [layers, heads, L, L] without ``<cls>``/``<eos>`` (as
    :meth:`EncoderFeatures.attention` returns it).
    """
    layers, heads = attentions.shape[:2]
    features = attention_features(attentions).numpy()
    lo, hi = RANGES[range_name]
    scores = [
        precision_at(f, contacts, valid, min_sep=lo, max_sep=hi, fraction=fraction)
        for f in features
    ]
    return rearrange(np.asarray(scores), "(layers heads) -> layers heads", layers=layers)


def best_heads(precisions: np.ndarray, count: int) -> list[tuple[int, int]]:
    """(layer, head) of the ``count`` highest entries, best first (0-based indices)."""
    order = np.argsort(-precisions, axis=None, kind="stable")[:count]
    return [tuple(int(v) for v in np.unravel_index(i, precisions.shape)) for i in order]


def head_maps(attentions: torch.Tensor, heads: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The [L, L] APC-corrected symmetrised maps of the given (layer, head)s."""
    features = attention_features(attentions)
    per_layer = attentions.shape[1]
    return [features[layer * per_layer + head].numpy() for layer, head in heads]
