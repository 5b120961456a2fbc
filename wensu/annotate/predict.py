"""Cell-type predictions of a fine-tuned classifier for the cells of one file.

Cells are tokenised as during fine-tuning (:mod:`wensu.train.cell_labelled_data`): the file's
genes that are in the classifier's gene panel, each cell normalised to ``target_sum`` over them
and binned, then its ``max_genes`` most expressed genes (ties by gene id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wensu.data.cell_inputs import (
    CellMatrix,
    GeneMapping,
    bin_values,
    cell_tokens,
    map_genes,
)
from wensu.data.collate import collate_tokens
from wensu.model.cell_classifier import CellClassifier
from wensu.model.cell_encoder import NUM_SPECIAL, PAD_IDX, select_genes


@dataclass
class Predictions:
    """Per cell: class probabilities [n, K] and cell embedding [n, d]; the gene mapping and
    the number of cells with no mapped expressed gene (their probabilities are uniform)."""

    proba: np.ndarray
    embedding: np.ndarray
    classes: list[str]
    mapping: GeneMapping
    cells_without_genes: int

    def predicted(self, min_confidence: float = 0.0, unassigned: str = "Unassigned"):
        """(label per cell, confidence per cell); below ``min_confidence`` -> ``unassigned``."""
        best = self.proba.argmax(1)
        confidence = self.proba.max(1)
        labels = np.array(self.classes, dtype=object)[best]
        labels[confidence < min_confidence] = unassigned
        return labels, confidence


@torch.inference_mode()
def predict_cells(
    classifier: CellClassifier,
    info: dict,
    cells: CellMatrix,
    *,
    min_genes: int = 100,
    max_tokens: int = 16384,
) -> Predictions:
    """Run ``classifier`` (from :func:`wensu.model.cell_classifier.load_cell_classifier`) on
    ``cells``; fewer than ``min_genes`` of the file's genes in the panel is an error."""
    vocab_ids = {g: i + NUM_SPECIAL for i, g in enumerate(info["vocab"])}
    tokens_cfg = info["tokens"]
    mapping = map_genes(cells, vocab_ids, min_genes=min_genes, allowed=set(info["panel"]))
    tokens = cell_tokens(cells, mapping)
    genes, bins = [], []
    for ids, values in zip(tokens.token_ids, tokens.values, strict=True):
        cell_bins = bin_values(values, tokens_cfg["num_bins"], tokens_cfg["target_sum"])
        chosen = select_genes(ids, cell_bins, int(tokens_cfg["max_genes"]))
        genes.append(chosen[0])
        bins.append(chosen[1])
    classifier = classifier.eval()
    n, k = len(genes), len(info["classes"])
    proba = np.full((n, k), 1.0 / k, dtype=np.float32)
    embedding = np.zeros((n, classifier.encoder.cfg.d_model), dtype=np.float32)
    lengths = np.array([len(g) for g in genes])
    order = [i for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
    start = 0
    while start < len(order):
        stop = start + max(1, max_tokens // int(lengths[order[start]]))
        batch = order[start:stop]
        batch_genes = collate_tokens([genes[i] for i in batch], PAD_IDX)
        batch_bins = collate_tokens([bins[i] for i in batch], 0)
        out = classifier(batch_genes, batch_bins, batch_genes.eq(PAD_IDX))
        proba[batch] = torch.softmax(out["logits"].float(), -1).numpy()
        embedding[batch] = out["embedding"].float().numpy()
        start = stop
    return Predictions(proba, embedding, list(info["classes"]), mapping, int((lengths == 0).sum()))
