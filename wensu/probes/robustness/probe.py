"""How far embeddings and probe predictions move under a perturbation.

For each perturbed input (see :mod:`wensu.probes.robustness.perturb`) and its clean protein(s):

* ``mean_cosine``: cosine similarity of the perturbed input's mean embedding to the clean
  protein's (inputs covering one whole protein: substitutions, X masking);
* ``residue_cosine``: mean over aligned residues of the cosine similarity of their per-residue
  embeddings (all perturbations; for truncation and concatenation the overlapping residues);
* ``accuracy`` of a probe trained on clean inputs, on the aligned residues of the perturbed
  inputs, next to ``clean_accuracy`` on the same residues of the clean inputs; ``drop`` is their
  difference (positive = worse under perturbation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wensu.probes.robustness.perturb import Perturbed
from wensu.probes.ss.probe import IGNORE, ProbeData, TrainedProbe, predict


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of ``a`` and ``b`` ([n, d] -> [n]), float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return (a * b).sum(-1) / norms


def embedding_similarity(
    clean: Sequence[np.ndarray], perturbed: Sequence[np.ndarray], inputs: Sequence[Perturbed]
) -> dict[str, float]:
    """``residue_cosine`` (and ``mean_cosine`` when every input covers one whole protein), each
    also ``_centred``: after subtracting the clean set's average vector, since embeddings share
    a large common component that keeps raw cosines near 1 even between unrelated proteins."""
    residue_centre = np.concatenate([np.asarray(c, np.float64) for c in clean]).mean(0)
    means = [np.asarray(c, np.float64).mean(0) for c in clean]
    mean_centre = np.mean(means, axis=0)
    residue, residue_centred, whole, whole_centred = [], [], [], []
    for features, item in zip(perturbed, inputs, strict=True):
        features = np.asarray(features, np.float64)
        for protein, clean_start, start, length in item.segments:
            a = np.asarray(clean[protein][clean_start : clean_start + length], np.float64)
            b = features[start : start + length]
            residue.append(float(row_cosine(a, b).mean()))
            residue_centred.append(float(row_cosine(a - residue_centre, b - residue_centre).mean()))
        protein, _, _, length = item.segments[0]
        if len(item.segments) == 1 and length == len(clean[protein]) == len(features):
            whole.append(float(row_cosine(means[protein], features.mean(0))))
            whole_centred.append(
                float(row_cosine(means[protein] - mean_centre, features.mean(0) - mean_centre))
            )
    out = {
        "residue_cosine": float(np.mean(residue)),
        "residue_cosine_centred": float(np.mean(residue_centred)),
    }
    if len(whole) == len(inputs):
        out["mean_cosine"] = float(np.mean(whole))
        out["mean_cosine_centred"] = float(np.mean(whole_centred))
    return out


def aligned_labels(labels: Sequence[np.ndarray], item: Perturbed) -> np.ndarray:
    """Labels of a perturbed input (IGNORE where no clean residue is aligned)."""
    out = np.full(len(item.sequence), IGNORE, dtype=np.int64)
    for protein, clean_start, start, length in item.segments:
        out[start : start + length] = labels[protein][clean_start : clean_start + length]
    return out


def _pooled_accuracy(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    pred = np.concatenate(predictions)
    true = np.concatenate(labels)
    scored = true != IGNORE
    return float((pred[scored] == true[scored]).mean()) if scored.any() else float("nan")


def probe_accuracy(
    probe: TrainedProbe,
    clean_predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    perturbed: Sequence[np.ndarray],
    inputs: Sequence[Perturbed],
    batch_residues: int = 8192,
) -> dict[str, float]:
    """Probe accuracy on the perturbed inputs and, on the same residues, on the clean inputs."""
    target = [aligned_labels(labels, item) for item in inputs]
    predicted = predict(probe, ProbeData(list(perturbed), target), batch_residues)
    clean_pred, clean_true = [], []
    for item in inputs:
        for protein, clean_start, _, length in item.segments:
            clean_pred.append(clean_predictions[protein][clean_start : clean_start + length])
            clean_true.append(labels[protein][clean_start : clean_start + length])
    accuracy = _pooled_accuracy(predicted, target)
    clean = _pooled_accuracy(clean_pred, clean_true)
    return {"accuracy": accuracy, "clean_accuracy": clean, "drop": clean - accuracy}


def evaluate_perturbation(
    featurize: Callable[[list[str]], list[np.ndarray]],
    clean: Sequence[np.ndarray],
    inputs: Sequence[Perturbed],
    probe: TrainedProbe | None = None,
    clean_predictions: Sequence[np.ndarray] | None = None,
    labels: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Similarity (and, with a probe, accuracy) of one perturbation level."""
    perturbed = featurize([item.sequence for item in inputs])
    out = embedding_similarity(clean, perturbed, inputs)
    out["changed_residues"] = int(sum(item.changed for item in inputs))
    out["input_residues"] = int(sum(len(item.sequence) for item in inputs))
    if probe is not None:
        out.update(probe_accuracy(probe, clean_predictions, labels, perturbed, inputs))
    return out
