"""Per-cell normalisation and expression binning: counts -> (gene token ids, bins) per cell.

One rule for every part that turns counts into bins: preprocessing writes the shards with it
(``wensu.preprocessing.cells`` re-exports it), and the cell-type probe and new-cell inputs bin
cells the same way at evaluation and annotation time.

Default (scBERT-style): counts are scaled to ``target_sum`` per cell (CP10k, using all of the
cell's measured genes as the library size), then ``bin = 1 + min(floor(log2(1 + CP10k)),
num_bins - 1)``. Why this rule: it is a fixed function of the normalised value, so one value
gets one bin in every cell, file and run (per-cell quantile bins, as in scGPT, change meaning
from cell to cell, and need no corpus statistics, so streaming and resume stay trivially
deterministic); log2 steps follow the roughly multiplicative noise of UMI counts. scBERT caps
``floor(log2(1 + x))`` at 5 and gives bin 0 to both zeros and values < 1; here bin 0 is kept
for "measured, not expressed" (so any expressed gene is >= 1) and the default cap is 7
(``num_bins = 8``): on the shared PBMC files the top bin then holds 0.2-1% of tokens instead of
3-8% with scBERT's cap.

Tokens list only genes that are in the vocabulary and expressed (count > 0); genes a file does
not measure are never written as zeros. ``include_zeros`` adds the file's measured vocabulary
genes with count 0 as bin-0 tokens (much longer cells). ``token_order="rank"`` orders tokens
Geneformer-style: by CP10k divided by the gene's median non-zero CP10k over the corpus,
descending (ties by gene id); medians come from a log2 histogram (1/8 log2-unit bins), so they
are exact to about 9%. ``max_genes`` keeps the highest-ranked (or most expressed) genes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

TOKEN_ORDERS = ("gene_id", "rank")
MAX_BINS = 254
HIST_BINS = 256
_HIST_LOW = -8.0
_HIST_STEPS_PER_LOG2 = 8


@dataclass(frozen=True)
class BinningConfig:
    """Normalisation target, number of expressed-value bins and the token layout."""

    target_sum: float = 1e4
    num_bins: int = 8
    include_zeros: bool = False
    token_order: str = "gene_id"
    max_genes: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.num_bins <= MAX_BINS:
            raise ValueError(f"binning.num_bins must be in 1..{MAX_BINS}, got {self.num_bins}")
        if self.target_sum <= 0:
            raise ValueError(f"binning.target_sum must be > 0, got {self.target_sum}")
        if self.token_order not in TOKEN_ORDERS:
            raise ValueError(f"binning.token_order must be one of {TOKEN_ORDERS}")
        if self.max_genes is not None and self.max_genes < 1:
            raise ValueError(f"binning.max_genes must be null or >= 1, got {self.max_genes}")


def normalise_total(counts: sparse.csr_matrix, target_sum: float = 1e4) -> sparse.csr_matrix:
    """Each row scaled to sum to ``target_sum`` (rows summing to 0 stay 0); float64 CSR."""
    counts = sparse.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = counts.copy()
    out.data *= np.repeat(scale, np.diff(out.indptr))
    return out


def expression_bins(values: np.ndarray, num_bins: int) -> np.ndarray:
    """uint8 bins of positive normalised values: ``1 + min(floor(log2(1 + v)), num_bins - 1)``."""
    level = np.floor(np.log2(1.0 + np.asarray(values, dtype=np.float64)))
    return (1 + np.minimum(level, num_bins - 1)).astype(np.uint8)


def add_to_histogram(histogram: np.ndarray, normalised: sparse.csr_matrix) -> None:
    """Count each non-zero normalised value into ``histogram[gene, log2 bin]`` (in place)."""
    idx = np.floor((np.log2(normalised.data) - _HIST_LOW) * _HIST_STEPS_PER_LOG2)
    idx = np.clip(idx, 0, HIST_BINS - 1).astype(np.int64)
    np.add.at(histogram.reshape(-1), normalised.indices.astype(np.int64) * HIST_BINS + idx, 1)


def medians_from_histogram(histogram: np.ndarray) -> np.ndarray:
    """Per gene, the centre of the histogram bin holding the median (1.0 where no data)."""
    cumulative = np.cumsum(histogram, axis=1)
    totals = cumulative[:, -1]
    position = (cumulative * 2 >= totals[:, None]).argmax(axis=1)
    medians = 2.0 ** (_HIST_LOW + (position + 0.5) / _HIST_STEPS_PER_LOG2)
    return np.where(totals > 0, medians, 1.0)


def tokenize_cells(
    counts: sparse.csr_matrix,
    token_ids: np.ndarray,
    config: BinningConfig,
    *,
    medians: np.ndarray | None = None,
    panel: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Turn a chunk of raw counts into per-cell (token ids int32, bins uint8).

    ``counts`` columns are the file's genes; ``token_ids[j]`` is gene j's vocabulary id or -1
    (dropped). ``medians`` (per file gene) is needed for ``token_order="rank"``; ``panel`` (the
    sorted vocabulary ids the file measures) for ``include_zeros``. Returns the per-cell lists
    and how many cells ``max_genes`` truncated.
    """
    if config.token_order == "rank" and medians is None:
        raise ValueError("token_order='rank' needs per-gene medians")
    if config.include_zeros and panel is None:
        raise ValueError("include_zeros needs the file's gene panel")
    normalised = normalise_total(counts, config.target_sum)
    token_ids = np.asarray(token_ids, dtype=np.int32)
    genes_out: list[np.ndarray] = []
    bins_out: list[np.ndarray] = []
    truncated = 0
    limit = config.max_genes
    for row in range(normalised.shape[0]):
        lo, hi = normalised.indptr[row], normalised.indptr[row + 1]
        columns = normalised.indices[lo:hi]
        values = normalised.data[lo:hi]
        ids = token_ids[columns]
        inside = ids >= 0
        columns, values, ids = columns[inside], values[inside], ids[inside]
        if config.token_order == "rank":
            order = np.lexsort((ids, -(values / medians[columns])))
        else:
            order = np.lexsort((ids, -values)) if limit and ids.size > limit else np.argsort(ids)
        cut = bool(limit and order.size > limit)
        if cut:
            order = order[:limit]
        genes = ids[order]
        bins = expression_bins(values[order], config.num_bins)
        if config.token_order == "gene_id" and limit:
            by_id = np.argsort(genes)
            genes, bins = genes[by_id], bins[by_id]
        if config.include_zeros:
            zeros = np.setdiff1d(panel, genes, assume_unique=True)
            if limit:
                room = max(limit - genes.size, 0)
                cut = cut or zeros.size > room
                zeros = zeros[:room]
            genes = np.concatenate((genes, zeros.astype(np.int32)))
            bins = np.concatenate((bins, np.zeros(zeros.size, dtype=np.uint8)))
            if config.token_order == "gene_id":
                by_id = np.argsort(genes, kind="stable")
                genes, bins = genes[by_id], bins[by_id]
        truncated += int(cut)
        genes_out.append(genes.astype(np.int32))
        bins_out.append(bins)
    return genes_out, bins_out, truncated
