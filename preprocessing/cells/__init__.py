"""Single-cell expression preprocessing: .h5ad raw counts -> cell shards over a gene vocabulary.

``run_cells(config)`` (or ``python -m wensu.preprocessing.cells.cli key=value ...``) validates
AnnData files, drops duplicated cells across files, filters cells and genes, bins expression
per cell and writes deterministic, resumable train/valid/test shards read by
:class:`wensu.data.cells.CellShardDataset`.
"""

from .binning import BinningConfig, expression_bins, normalise_total, tokenize_cells
from .config import CellsConfig, load_cells_config
from .h5ad import H5adCells, H5adError, ReadOptions
from .pipeline import run_cells
from .vocab import SPECIAL_TOKENS, GeneVocab, VocabError

__all__ = [
    "SPECIAL_TOKENS",
    "BinningConfig",
    "CellsConfig",
    "GeneVocab",
    "H5adCells",
    "H5adError",
    "ReadOptions",
    "VocabError",
    "expression_bins",
    "load_cells_config",
    "normalise_total",
    "run_cells",
    "tokenize_cells",
]
