"""ESM-style contact prediction from attention maps, and precision@L metrics.

As in Rao et al. 2021 (ESM ``ContactPredictionHead``): the attention maps of every layer and
head, without the ``<cls>``/``<eos>`` rows and columns, are symmetrised (A + Aᵀ), corrected with
the average product correction (APC), and combined by a logistic regression fitted on a few
structures. ESM used an L1 penalty; so do we by default (sklearn ``liblinear``; ``C`` is the
inverse regularisation strength, applied to standardised features).

Precision follows ESM's ``compute_precisions``: among residue pairs i < j in a separation range
whose residues are both observed, take the top L/k by predicted probability (L = sequence
length); precision = true contacts among them / (L/k), so a protein with fewer candidate pairs
than L/k is not rewarded for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sklearn
import torch
from einops import einsum, rearrange
from sklearn.linear_model import LogisticRegression

_SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
MIN_SEPARATION = 6
RANGES: dict[str, tuple[int, int | None]] = {
    "short": (6, 12),
    "medium": (12, 24),
    "long": (24, None),
}
FRACTIONS: dict[str, int] = {"P@L": 1, "P@L/2": 2, "P@L/5": 5}


def symmetrize(x: torch.Tensor) -> torch.Tensor:
    """A + Aᵀ over the last two dimensions."""
    return x + x.transpose(-1, -2)


def apc(x: torch.Tensor) -> torch.Tensor:
    """Average product correction over the last two dimensions: A_ij - A_i. A_.j / A_.."""
    row = x.sum(-1, keepdim=True)
    col = x.sum(-2, keepdim=True)
    total = x.sum((-1, -2), keepdim=True)
    return x - row * col / total


def attention_features(attentions: torch.Tensor) -> torch.Tensor:
    """[layers, heads, L, L] attention (specials removed) -> [layers*heads, L, L] APC features."""
    maps = rearrange(attentions.float(), "layers heads i j -> (layers heads) i j")
    return apc(symmetrize(maps))


def pair_mask(length: int, min_sep: int = MIN_SEPARATION, max_sep: int | None = None) -> np.ndarray:
    """Upper-triangle [L, L] mask of pairs with min_sep <= j - i (< max_sep when given)."""
    sep = np.arange(length)[None, :] - np.arange(length)[:, None]
    mask = sep >= min_sep
    if max_sep is not None:
        mask &= sep < max_sep
    return mask


def training_pairs(
    features: torch.Tensor, contacts: np.ndarray, valid: np.ndarray, min_sep: int = MIN_SEPARATION
) -> tuple[np.ndarray, np.ndarray]:
    """(X [n, f], y [n]) from one protein: observed pairs i < j with j - i >= min_sep."""
    mask = pair_mask(len(contacts), min_sep) & valid
    x = features[:, torch.from_numpy(mask)].T.numpy()
    return x, contacts[mask].astype(np.int64)


@dataclass
class ContactRegression:
    """Fitted weights in the raw feature space (the fit itself ran on standardised features)."""

    weights: np.ndarray  # [f]
    bias: float
    penalty: str
    c: float

    @property
    def nonzero(self) -> int:
        return int(np.count_nonzero(self.weights))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Contact probability of each row of ``x`` [n, f]."""
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))


def fit_contact_regression(
    x: np.ndarray, y: np.ndarray, *, penalty: str = "l1", c: float = 0.15, seed: int = 0
) -> ContactRegression:
    """Logistic regression of contact vs. APC attention features (L1 as ESM, or L2).

    Features are standardised for the fit: attention scales differ by orders of magnitude
    between models (a small model's APC values are ~1e-3), and an unscaled L1 penalty would
    zero every weight of a weak model; standardising makes ``c`` mean the same for all.
    """
    if len(np.unique(y)) < 2:
        raise ValueError("contact regression needs both contacts and non-contacts in training")
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    solver = "liblinear" if penalty == "l1" else "lbfgs"
    # scikit-learn 1.8 replaced `penalty` by `l1_ratio`; older versions only know `penalty`.
    if _SKLEARN_VERSION >= (1, 8):
        regularisation = {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    else:
        regularisation = {"penalty": penalty}
    mean = x.mean(0)
    std = x.std(0)
    std[std == 0] = 1.0
    model = LogisticRegression(
        C=c, solver=solver, max_iter=1000, random_state=seed, **regularisation
    )
    model.fit((x - mean) / std, y)
    weights = model.coef_[0] / std
    bias = float(model.intercept_[0] - (weights * mean).sum())
    return ContactRegression(weights=weights, bias=bias, penalty=penalty, c=c)


def predict_contacts(regression: ContactRegression, features: torch.Tensor) -> np.ndarray:
    """[L, L] contact probabilities (symmetric, since the features are)."""
    weights = torch.from_numpy(regression.weights).to(torch.float64)
    logits = einsum(features.double(), weights, "f i j, f -> i j") + regression.bias
    return torch.sigmoid(logits).numpy()


def precision_at(
    scores: np.ndarray,
    contacts: np.ndarray,
    valid: np.ndarray,
    *,
    min_sep: int,
    max_sep: int | None,
    fraction: int,
    length: int | None = None,
) -> float:
    """Precision of the top ``length // fraction`` pairs in a separation range (ESM's P@L/k).

    Pairs tied with the last selected score count at their expected value under random
    tie-breaking, so a constant predictor scores the contact rate, not an artefact of order.
    """
    length = length or len(contacts)
    top = max(length // fraction, 1)
    mask = pair_mask(len(contacts), min_sep, max_sep) & valid
    candidate_scores = scores[mask]
    hits = contacts[mask]
    if len(candidate_scores) <= top:
        return float(hits.sum() / top)
    threshold = np.partition(candidate_scores, len(candidate_scores) - top)[-top]
    above = candidate_scores > threshold
    tied = candidate_scores == threshold
    expected_tied = (top - above.sum()) * hits[tied].mean()
    return float((hits[above].sum() + expected_tied) / top)


def contact_precisions(
    scores: np.ndarray, contacts: np.ndarray, valid: np.ndarray
) -> dict[str, float]:
    """P@L, P@L/2, P@L/5 for short (6-11), medium (12-23) and long (>= 24) range contacts."""
    out = {}
    for range_name, (lo, hi) in RANGES.items():
        for metric, k in FRACTIONS.items():
            out[f"{range_name} {metric}"] = precision_at(
                scores, contacts, valid, min_sep=lo, max_sep=hi, fraction=k
            )
    return out


def beyond_window_fraction(contacts: np.ndarray, valid: np.ndarray, window: int | None) -> float:
    """Share of long-range (>= 24) true contacts farther apart than the attention window."""
    long_range = contacts & valid & pair_mask(len(contacts), RANGES["long"][0])
    if window is None or not long_range.any():
        return 0.0
    far = pair_mask(len(contacts), window + 1)
    return float((long_range & far).sum() / long_range.sum())
