"""Per-cell normalisation and expression binning; defined in :mod:`wensu.data.cell_binning`
(the same rule bins cells for training, evaluation and annotation) and re-exported here."""

from wensu.data.cell_binning import (
    HIST_BINS,
    MAX_BINS,
    TOKEN_ORDERS,
    BinningConfig,
    add_to_histogram,
    expression_bins,
    medians_from_histogram,
    normalise_total,
    tokenize_cells,
)

__all__ = [
    "HIST_BINS",
    "MAX_BINS",
    "TOKEN_ORDERS",
    "BinningConfig",
    "add_to_histogram",
    "expression_bins",
    "medians_from_histogram",
    "normalise_total",
    "tokenize_cells",
]
