"""Pass 1 over each input: the fate of every cell before the vocabulary exists, and gene usage.

Per file it decides, cell by cell, ``duplicate`` (from :mod:`.duplicates`), quarantine
(``non_integer_values``, ``negative_values``) or filter (``zero_counts``, ``too_few_genes``:
fewer than ``min_genes`` expressed measured genes), and counts in how many kept cells each gene
is expressed (for ``min_cells``). Results are cached per input under ``.work/scan/`` so a
resumed run does not read the file again for this pass.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .binning import HIST_BINS, add_to_histogram, medians_from_histogram, normalise_total
from .h5ad import H5adCells
from .vocab import GeneVocab

REASONS = (
    "ok",
    "duplicate",
    "non_integer_values",
    "negative_values",
    "zero_counts",
    "too_few_genes",
    "no_vocab_genes",
    "non_finite_values",  # appended: cached scans keep their codes
)
CODE = {name: code for code, name in enumerate(REASONS)}
QUARANTINE_REASONS = ("non_integer_values", "negative_values", "non_finite_values")
FILTER_REASONS = ("zero_counts", "too_few_genes", "no_vocab_genes")


@dataclass
class FileScan:
    """``codes`` (uint8 per cell, index into :data:`REASONS`), ``gene_cells`` (kept cells
    expressing each file gene), optional ``histogram`` (rank mode) and the file's warnings."""

    codes: np.ndarray
    gene_cells: np.ndarray
    histogram: np.ndarray | None
    warnings: list[str]


def scan_file(
    cells: H5adCells,
    dropped: np.ndarray,
    *,
    min_genes: int,
    chunk_cells: int,
    target_sum: float,
    need_histogram: bool,
    cache: Path,
) -> FileScan:
    """Scan one file (or load its cached scan); see the module docstring."""
    cached = _load(cache, need_histogram)
    if cached is not None:
        cells.warnings.extend(w for w in cached.warnings if w not in cells.warnings)
        return cached
    codes = np.zeros(cells.n_cells, dtype=np.uint8)
    gene_cells = np.zeros(cells.symbols.size, dtype=np.int64)
    histogram = np.zeros((cells.symbols.size, HIST_BINS), np.int64) if need_histogram else None
    for start in range(0, cells.n_cells, chunk_cells):
        counts = cells.read_rows(start, start + chunk_cells)
        rows = slice(start, start + counts.shape[0])
        problems = cells.count_problems(counts, start)
        n_genes = np.diff(counts.indptr)
        chunk = np.zeros(counts.shape[0], dtype=np.uint8)
        chunk[n_genes < min_genes] = CODE["too_few_genes"]
        chunk[n_genes == 0] = CODE["zero_counts"]
        for reason in QUARANTINE_REASONS:
            chunk[problems == reason] = CODE[reason]
        chunk[dropped[rows]] = CODE["duplicate"]
        codes[rows] = chunk
        kept = counts[chunk == CODE["ok"]]
        gene_cells += np.bincount(kept.indices, minlength=gene_cells.size)
        if histogram is not None:
            add_to_histogram(histogram, normalise_total(kept, target_sum))
    scan = FileScan(codes, gene_cells, histogram, list(cells.warnings))
    _save(cache, scan)
    return scan


def _save(path: Path, scan: FileScan) -> None:
    buffer = io.BytesIO()
    arrays = {
        "codes": scan.codes,
        "gene_cells": scan.gene_cells,
        "warnings": np.array(scan.warnings, dtype=str),
    }
    if scan.histogram is not None:
        arrays["histogram"] = scan.histogram
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _load(path: Path, need_histogram: bool) -> FileScan | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if need_histogram and "histogram" not in data:
                return None
            return FileScan(
                codes=data["codes"],
                gene_cells=data["gene_cells"],
                histogram=data["histogram"] if need_histogram else None,
                warnings=[str(w) for w in data["warnings"]],
            )
    except (OSError, ValueError, KeyError):
        return None


def pooled_gene_cells(files: list[H5adCells], scans: list[FileScan]) -> dict[str, int]:
    """Kept cells expressing each gene symbol, summed over all inputs."""
    pooled: dict[str, int] = {}
    for cells, scan in zip(files, scans, strict=True):
        for symbol, count in zip(cells.symbols, scan.gene_cells, strict=True):
            pooled[symbol] = pooled.get(symbol, 0) + int(count)
    return pooled


def build_vocab(files: list[H5adCells], scans: list[FileScan], min_cells: int) -> GeneVocab:
    """Genes expressed in >= ``min_cells`` kept cells over all inputs, sorted by symbol."""
    pooled = pooled_gene_cells(files, scans)
    return GeneVocab(sorted(s for s, n in pooled.items() if n >= min_cells))


def pooled_medians(files: list[H5adCells], scans: list[FileScan], vocab: GeneVocab) -> np.ndarray:
    """Median non-zero normalised value per vocabulary gene over all inputs (rank order)."""
    total = np.zeros((len(vocab.genes), HIST_BINS), dtype=np.int64)
    for cells, scan in zip(files, scans, strict=True):
        ids = vocab.lookup(list(cells.symbols))
        inside = ids >= 0
        np.add.at(total, ids[inside] - vocab.num_special, scan.histogram[inside])
    return medians_from_histogram(total)
