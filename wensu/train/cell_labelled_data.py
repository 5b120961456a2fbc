"""Labelled cells for fine-tuning a cell classifier: files -> tokens -> train/validation loaders.

Training files are user ``.h5ad`` paths (``path.h5ad:obs_column`` picks each file's label
column; :mod:`wensu.data.cell_inputs` reads and checks them). Genes are mapped to the pretrained
checkpoint's vocabulary; with ``gene_panel: shared`` only genes measured by *every* training file
are used (the panel travels in the classifier checkpoint, and annotation uses the same genes),
so a class is never learnt from genes one file lacks. ``panel_from`` narrows the panel further to
the genes of the (unlabelled) files you will annotate -- only their gene lists are read -- so
the classifier is trained on exactly the genes the query measures, as a baseline refitted on
the genes a test file shares with the training files would be.

Validation is split by group, never by random cells: ``val_by: donor`` holds out whole donors
(a file without donor ids counts as one donor), ``val_by: file`` whole files; groups are taken in
a fixed hashed order until ``val_fraction`` of the cells is reached.

Augmentation (training only, drawn from ``(seed, epoch, cell)`` so a resumed run repeats it):
``panel_dropout`` hides a random share (up to that fraction) of a cell's genes before the cell
is normalised and binned -- what a test file measuring fewer genes looks like -- and the
``max_genes`` kept are the most expressed with random tie-breaking. Validation and annotation
see every mapped gene and break ties by gene id (:func:`wensu.model.cell_encoder.select_genes`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from wensu.data.cell_inputs import (
    CellInputError,
    CellTokens,
    bin_values,
    cell_tokens,
    labelled_only,
    map_genes,
    parse_file_spec,
    read_cell_file,
    read_cell_genes,
)
from wensu.model.cell_encoder import NUM_SPECIAL, select_genes
from wensu.train.cell_datamodule import (
    FixedOrderBatchSampler,
    FixedOrderBudgetSampler,
    collate_cell_examples,
)
from wensu.train.datamodule import ResumableDataModule
from wensu.train.examples import _unpack
from wensu.train.loader import ResumableDataLoader, loader_generator

VAL_BY = ("donor", "file")
GENE_PANELS = ("shared", "all")


@dataclass
class LabelledTokens:
    """Tokens of every training cell with its class index, file and validation group."""

    tokens: CellTokens
    labels: np.ndarray  # class index per cell
    classes: list[str]
    files: np.ndarray
    groups: np.ndarray
    panel: list[str]  # genes used (vocabulary symbols)
    report: dict


def stable_subset(keys: Sequence[str], limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` items, a fixed pseudo-random subset by CRC32 of the key."""
    if limit is None or len(keys) <= limit:
        return np.arange(len(keys))
    hashes = np.array([zlib.crc32(str(k).encode()) for k in keys])
    return np.sort(np.argsort(hashes, kind="stable")[:limit])


def load_labelled_tokens(
    files: Sequence[str],
    vocab: Sequence[str],
    *,
    label_column: str | None = "cell_type_coarse",
    gene_column: str | None = None,
    gene_panel: str = "shared",
    values: str = "auto",
    min_genes: int = 100,
    max_cells_per_file: int | None = None,
    panel_from: Sequence[str] = (),
) -> LabelledTokens:
    """Read, check and tokenise the training files (errors are :class:`CellInputError`)."""
    if not files:
        raise CellInputError("data.train_files is empty: give at least one labelled .h5ad")
    if gene_panel not in GENE_PANELS:
        raise CellInputError(f"data.gene_panel must be one of {GENE_PANELS}, got {gene_panel!r}")
    vocab_ids = {g: i + NUM_SPECIAL for i, g in enumerate(vocab)}
    parts = []
    for text in files:
        spec = parse_file_spec(text, label_column)
        cells = read_cell_file(spec, gene_column=gene_column, values=values, require_labels=True)
        cells = labelled_only(cells)
        if cells.n_cells == 0:
            raise CellInputError(
                f"{spec.path}: no cell has a usable label in {spec.label_column!r}"
            )
        keep = stable_subset([f"{cells.name}/{c}" for c in cells.cell_ids], max_cells_per_file)
        parts.append(cells.subset(keep))
    in_vocab = [set(p.genes) & set(vocab_ids) for p in parts]
    panel = set.intersection(*in_vocab) if gene_panel == "shared" else set.union(*in_vocab)
    query_report = {}
    for path in panel_from:
        genes = read_cell_genes(path, gene_column=gene_column)
        before = len(panel)
        panel &= set(genes)
        query_report[str(path)] = {"genes_in_file": len(genes), "panel_kept": len(panel)}
        if len(panel) < max(min_genes, 1):
            raise CellInputError(
                f"{path}: only {len(panel)} of the {before} panel genes are in this "
                f"panel_from file (minimum {min_genes}); check gene_column (symbols or Ensembl ids)"
            )
    classes = sorted({str(c) for p in parts for c in p.labels})
    if len(classes) < 2:
        raise CellInputError(
            f"{', '.join(str(p.path) for p in parts)}: labels hold a single class "
            f"({classes[0]!r}); a classifier needs at least two"
        )
    index = {c: i for i, c in enumerate(classes)}
    token_ids, token_values, labels, file_names, groups = [], [], [], [], []
    report: dict[str, Any] = {"files": {}, "gene_panel": gene_panel, "panel_genes": len(panel)}
    if query_report:
        report["panel_from"] = query_report
    for cells in parts:
        mapping = map_genes(cells, vocab_ids, min_genes=min_genes, allowed=panel)
        tokens = cell_tokens(cells, mapping)
        token_ids += tokens.token_ids
        token_values += tokens.values
        labels.append(np.array([index[str(c)] for c in cells.labels], dtype=np.int64))
        file_names += [cells.name] * cells.n_cells
        groups += [f"{cells.name}/{d}" if d else cells.name for d in cells.donors]
        report["files"][cells.name] = {
            "path": str(cells.path),
            "cells": cells.n_cells,
            "values": cells.value_kind,
            **mapping.report(),
            "classes": {c: int((cells.labels == c).sum()) for c in sorted(set(cells.labels))},
        }
    return LabelledTokens(
        CellTokens(token_ids, token_values),
        np.concatenate(labels),
        classes,
        np.array(file_names, dtype=object),
        np.array(groups, dtype=object),
        sorted(panel),
        report,
    )


def group_split(
    groups: np.ndarray, labels: np.ndarray, val_fraction: float
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train indices, validation indices, held-out groups): whole groups in CRC32 order until
    ``val_fraction`` of the cells; a group that would more than double it is skipped, and so is
    one that would leave a class with no training cell."""
    if not 0 < val_fraction < 1:
        raise CellInputError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    names, sizes = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise CellInputError(
            f"cannot split by group: all cells are in one group ({names[0]!r}); add donor ids "
            "or files, or use val_by: file with several files"
        )
    total, target = len(groups), val_fraction * len(groups)
    order = sorted(range(len(names)), key=lambda i: zlib.crc32(str(names[i]).encode()))
    held: list[str] = []
    held_cells = 0
    for i in order:
        if held_cells >= target:
            break
        if held_cells + sizes[i] > 2 * target and held_cells + sizes[i] < total:
            continue
        trial = np.isin(groups, [*held, names[i]])
        if len(np.unique(labels[~trial])) < len(np.unique(labels)):
            continue
        held.append(str(names[i]))
        held_cells += int(sizes[i])
    if not held:
        raise CellInputError(
            f"no group can be held out for validation at val_fraction={val_fraction} "
            f"(groups: {dict(zip(names.tolist(), sizes.tolist(), strict=True))})"
        )
    val = np.isin(groups, held)
    return np.flatnonzero(~val), np.flatnonzero(val), held


class ClassifyExamples(Dataset):
    """Cells as ``{"genes", "bins", "label", "id", "epoch", "batch_index"}``."""

    def __init__(
        self,
        data: LabelledTokens,
        indices: np.ndarray,
        *,
        num_bins: int,
        target_sum: float,
        max_genes: int,
        seed: int,
        panel_dropout: float = 0.0,
        train: bool = True,
    ):
        self.data, self.indices = data, np.asarray(indices)
        self.num_bins, self.target_sum = int(num_bins), float(target_sum)
        self.max_genes, self.seed = int(max_genes), int(seed)
        self.panel_dropout = float(panel_dropout) if train else 0.0
        self.train = train
        lengths = np.array([len(data.tokens.token_ids[i]) for i in self.indices], dtype=np.int64)
        self.lengths = np.clip(lengths, 1, self.max_genes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item) -> dict[str, Any]:
        epoch, batch_index, position = _unpack(item)
        index = int(self.indices[position])
        genes = self.data.tokens.token_ids[index]
        values = self.data.tokens.values[index]
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            if self.panel_dropout > 0 and len(genes) > 1:
                keep = rng.random(len(genes)) >= rng.uniform(0, self.panel_dropout)
                keep[rng.integers(len(genes))] = True
                genes, values = genes[keep], values[keep]
            bins = bin_values(values, self.num_bins, self.target_sum)
            if len(genes) > self.max_genes:
                order = np.lexsort((rng.random(len(genes)), -bins))[: self.max_genes]
                order.sort()
                genes, bins = genes[order], bins[order]
        else:
            bins = bin_values(values, self.num_bins, self.target_sum)
            genes, bins = select_genes(genes, bins, self.max_genes)
        return {
            "genes": genes,
            "bins": bins,
            "label": int(self.data.labels[index]),
            "id": str(index),
            "epoch": epoch,
            "batch_index": batch_index,
        }


def collate_labelled(examples: Sequence[dict[str, Any]], pad_to_multiple: int = 1) -> dict:
    import torch

    batch = collate_cell_examples(examples, pad_to_multiple)
    batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
    return batch


class LabelledCellDataModule(ResumableDataModule):
    """Train/validation loaders over :class:`LabelledTokens` (token-budget batches, resumable)."""

    def __init__(
        self,
        data: LabelledTokens,
        train_index: np.ndarray,
        val_index: np.ndarray,
        *,
        num_bins: int,
        target_sum: float,
        max_genes: int,
        max_tokens: int,
        max_cells: int | None = None,
        seed: int = 0,
        panel_dropout: float = 0.0,
        pad_to_multiple: int = 8,
    ):
        super().__init__()
        common = dict(num_bins=num_bins, target_sum=target_sum, max_genes=max_genes, seed=seed)
        self.train_set = ClassifyExamples(
            data, train_index, panel_dropout=panel_dropout, train=True, **common
        )
        self.val_set = ClassifyExamples(data, val_index, train=False, **common)
        self.max_tokens, self.max_cells = int(max_tokens), max_cells
        self.seed, self.pad_to_multiple = int(seed), int(pad_to_multiple)
        if max_genes > max_tokens:
            raise CellInputError(f"data.max_genes={max_genes} exceeds data.max_tokens={max_tokens}")

    def _loader(self, dataset, sampler, seed: int) -> ResumableDataLoader:
        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=partial(collate_labelled, pad_to_multiple=self.pad_to_multiple),
            num_workers=0,
            generator=loader_generator(seed),
        )

    def train_dataloader(self) -> ResumableDataLoader:
        sampler = self._budget_sampler(
            self.train_set.lengths,
            self.max_tokens,
            shuffle=True,
            extra_tokens_per_seq=0,
            max_batch_size=self.max_cells,
        )
        return self._loader(self.train_set, self._resumable(sampler), self.seed)

    def val_dataloader(self) -> ResumableDataLoader:
        sampler = self._budget_sampler(
            self.val_set.lengths,
            self.max_tokens,
            shuffle=False,
            extra_tokens_per_seq=0,
            max_batch_size=self.max_cells,
            kind=FixedOrderBudgetSampler,
        )
        return self._loader(self.val_set, FixedOrderBatchSampler(sampler), self.seed + 1)
