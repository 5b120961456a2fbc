"""User ``.h5ad`` files for the cell tools (fine-tuning, annotation): read, check, map genes.

One entry point, :func:`read_cell_file`, turns any AnnData file into a :class:`CellMatrix`
(cells x genes, CSR, values that :func:`tokenize_cells` can bin) or raises
:class:`CellInputError` with one line naming the file and the reason. What it accepts:

* the matrix as CSR, CSC or dense (``X``, or ``raw/X`` with ``matrix="raw"``), read through
  h5py row by row where it can (the file is opened read-only; it is never written);
* values that are **raw counts** (non-negative integers) or **log-normalised**
  (``log1p(count / total * scale)``, non-negative, not integers, at most ``LOG_MAX``) or
  **linear-normalised** (CP10k / CPM: non-integers above ``LOG_MAX``). ``values="auto"`` detects
  which and says so in :attr:`CellMatrix.value_kind`; ``values="counts"`` insists on raw counts.
  Log values are turned back into normalised values with ``expm1``; since binning renormalises
  every cell to ``target_sum`` over the genes used, the original scale does not matter;
* gene identifiers as symbols (``var_names`` or a ``var`` column named by ``gene_column``) or
  Ensembl ids, mapped to symbols through a symbol column of ``var`` (the model vocabulary is by
  symbol); a version suffix (``ENSG...12.3``) is ignored when matching.

NaN, infinite or negative values, an empty file (no cells or no genes) and duplicated gene
identifiers are errors. ``path.h5ad:obs_column`` names the label column of one file
(:func:`parse_file_spec`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from wensu.cell_vocab import ENSEMBL_ID, SYMBOL_COLUMNS
from wensu.data.cell_binning import expression_bins

VALUE_KINDS = ("auto", "counts", "log1p", "normalized")
LOG_MAX = 30.0  # log1p(CP10k) of one gene stays below ~10; larger non-integers are linear
UNUSABLE_LABELS = ("", "nan", "NaN", "None", "Unknown", "unknown")


class CellInputError(ValueError):
    """A cell input file cannot be used; the one-line message names the file and the reason."""


@dataclass(frozen=True)
class CellFileSpec:
    """One input file and, optionally, the obs column holding its cell-type labels."""

    path: Path
    label_column: str | None = None

    @property
    def name(self) -> str:
        name = self.path.name
        return name[: -len(".h5ad")] if name.endswith(".h5ad") else self.path.stem


def parse_file_spec(text: str | os.PathLike, default_label: str | None = None) -> CellFileSpec:
    """``path.h5ad`` or ``path.h5ad:obs_column`` (split at the last ``:`` after ``.h5ad``)."""
    text = str(text)
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".h5ad") and tail and "/" not in tail:
        return CellFileSpec(Path(head).expanduser(), tail)
    return CellFileSpec(Path(text).expanduser(), default_label)


@dataclass
class CellMatrix:
    """Cells of one file: ``values`` (cells x ``genes``, CSR float64, what binning reads),
    ``labels`` ("" = unlabelled; None without a label column), ``donors`` ("" = unknown),
    ``value_kind`` (``counts`` | ``log1p`` | ``normalized``) and what reading noticed."""

    name: str
    path: Path
    values: sparse.csr_matrix
    genes: np.ndarray
    cell_ids: np.ndarray
    donors: np.ndarray
    labels: np.ndarray | None
    value_kind: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        return int(self.values.shape[0])

    def subset(self, rows: np.ndarray) -> CellMatrix:
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        return CellMatrix(
            self.name,
            self.path,
            self.values[rows],
            self.genes,
            self.cell_ids[rows],
            self.donors[rows],
            None if self.labels is None else self.labels[rows],
            self.value_kind,
            list(self.notes),
        )


def _strings(values) -> np.ndarray:
    import pandas as pd

    series = pd.Series(values)
    series = series.astype(object).where(series.notna(), "")
    return np.array([str(v) for v in series], dtype=object)


def _gene_ids(path: Path, var, gene_column: str | None) -> tuple[np.ndarray, str]:
    """Gene symbols of ``var`` (and how they were found)."""
    if gene_column is not None:
        if gene_column not in var.columns:
            raise CellInputError(
                f"{path}: var has no column {gene_column!r} for gene ids "
                f"(columns: {sorted(map(str, var.columns))}; unset gene_column to use var_names)"
            )
        ids, source = _strings(var[gene_column]), f"var[{gene_column!r}]"
    else:
        ids, source = _strings(var.index), "var_names"
    if len(ids) and np.mean([bool(ENSEMBL_ID.match(g)) for g in ids]) > 0.5:
        column = next((c for c in SYMBOL_COLUMNS if c in var.columns and c != gene_column), None)
        if column is None:
            raise CellInputError(
                f"{path}: {source} are Ensembl gene ids (e.g. {ids[0]!r}) and var has no gene "
                f"symbol column ({', '.join(SYMBOL_COLUMNS)}); the model's vocabulary is by "
                "symbol, so name a var column of symbols with gene_column=<column>"
            )
        ids, source = _strings(var[column]), f"var[{column!r}] (symbols for Ensembl ids)"
    return ids, source


def _check_unique(path: Path, genes: np.ndarray, source: str) -> None:
    named = genes[genes != ""]
    unique, counts = np.unique(named, return_counts=True)
    repeated = unique[counts > 1]
    if repeated.size:
        shown = ", ".join(map(str, repeated[:5])) + (" ..." if repeated.size > 5 else "")
        raise CellInputError(
            f"{path}: {repeated.size} duplicated gene ids in {source} ({shown}); make them "
            "unique (anndata: adata.var_names_make_unique()) or sum them before annotating"
        )


def detect_value_kind(path: Path, data: np.ndarray, wanted: str = "auto") -> str:
    """``counts`` | ``log1p`` | ``normalized`` from the stored non-zero values (see module doc);
    NaN/inf/negative values and non-integers where ``wanted == "counts"`` are errors."""
    if wanted not in VALUE_KINDS:
        raise CellInputError(f"values must be one of {VALUE_KINDS}, got {wanted!r}")
    if data.size and not np.isfinite(data).all():
        raise CellInputError(f"{path}: the matrix holds NaN or infinite values")
    if data.size and float(data.min()) < 0:
        raise CellInputError(
            f"{path}: the matrix holds negative values (min {float(data.min()):g}); expected raw "
            "counts or log-normalised expression (scaled/centred data cannot be binned)"
        )
    integer = bool(np.all(data == np.round(data)))
    if wanted == "counts":
        if not integer:
            bad = data[data != np.round(data)][0]
            raise CellInputError(
                f"{path}: values=counts but the matrix holds non-integer values (e.g. {bad:g}); "
                "give raw UMI counts or set values=auto / log1p"
            )
        return "counts"
    if wanted != "auto":
        return wanted
    if integer:
        return "counts"
    return "log1p" if float(data.max(initial=0.0)) <= LOG_MAX else "normalized"


def _read_rows(path: Path, X, n_cells: int, chunk: int = 4096) -> sparse.csr_matrix:
    """The whole matrix as float64 CSR, read ``chunk`` rows at a time (backed files stream)."""
    parts = []
    try:
        for start in range(0, n_cells, chunk):
            block = X[start : min(start + chunk, n_cells)]
            block = block.to_memory() if hasattr(block, "to_memory") else block
            parts.append(sparse.csr_matrix(block, dtype=np.float64))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CellInputError(f"{path}: cannot read the expression matrix ({error})") from None
    out = sparse.vstack(parts, format="csr") if parts else sparse.csr_matrix((0, X.shape[1]))
    out.eliminate_zeros()
    return out


def read_cell_file(
    spec: CellFileSpec | str | os.PathLike,
    *,
    gene_column: str | None = None,
    values: str = "auto",
    matrix: str = "X",
    donor_column: str = "donor_id",
    require_labels: bool = False,
) -> CellMatrix:
    """One .h5ad as a :class:`CellMatrix` (see the module docstring for what is accepted).
    The file is opened read-only in backed mode and read in row chunks."""
    spec = spec if isinstance(spec, CellFileSpec) else parse_file_spec(spec)
    path = spec.path
    with _backed(path) as adata:
        X, var = _matrix_and_var(path, adata, matrix)
        obs = adata.obs
        genes, source = _gene_ids(path, var, gene_column)
        _check_unique(path, genes, source)
        values_matrix = _read_rows(path, X, adata.n_obs)
    labels = None
    if spec.label_column is not None:
        if spec.label_column not in obs.columns:
            raise CellInputError(
                f"{path}: no label column {spec.label_column!r} in obs "
                f"(columns: {sorted(map(str, obs.columns))}); name it as {path.name}:<column>"
            )
        labels = _strings(obs[spec.label_column])
    elif require_labels:
        raise CellInputError(f"{path}: no label column given (write it as {path.name}:<column>)")
    n = values_matrix.shape[0]
    donors = _strings(obs[donor_column]) if donor_column in obs.columns else np.full(n, "", object)
    kind = detect_value_kind(path, values_matrix.data, values)
    if kind == "log1p":
        values_matrix.data = np.expm1(values_matrix.data)
    notes = [f"{path.name}: genes from {source}; values read as {kind}"]
    return CellMatrix(
        spec.name,
        path,
        values_matrix,
        genes,
        _strings(obs.index),
        donors,
        labels,
        kind,
        notes,
    )


def read_cell_genes(
    path: str | os.PathLike, *, gene_column: str | None = None, matrix: str = "X"
) -> np.ndarray:
    """The gene ids of an .h5ad (as :func:`read_cell_file` reads them), without its cells."""
    path = parse_file_spec(path).path
    with _backed(path) as adata:
        _, var = _matrix_and_var(path, adata, matrix)
        genes, source = _gene_ids(path, var, gene_column)
        _check_unique(path, genes, source)
    return genes


@contextmanager
def _backed(path: Path):
    """The file opened read-only in backed mode (closed on exit); bad files are one line."""
    import anndata
    import h5py

    if not path.is_file():
        raise CellInputError(f"{path}: no such .h5ad file")
    if not h5py.is_hdf5(path):
        raise CellInputError(f"{path}: not an HDF5/.h5ad file")
    try:
        adata = anndata.read_h5ad(path, backed="r")
    except Exception as error:  # noqa: BLE001 - anndata raises many types for broken files
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CellInputError(f"{path}: not a readable .h5ad ({first})") from None
    try:
        yield adata
    finally:
        if adata.isbacked:
            adata.file.close()


def _matrix_and_var(path: Path, adata, matrix: str):
    """``(X, var)`` of ``matrix`` ("X" or "raw"); an empty or missing matrix is an error."""
    if matrix not in ("X", "raw"):
        raise CellInputError(f"matrix must be 'X' or 'raw', got {matrix!r}")
    if matrix == "raw":
        if adata.raw is None:
            raise CellInputError(f"{path}: matrix=raw but the file has no raw/X")
        X, var = adata.raw.X, adata.raw.var
    else:
        X, var = adata.X, adata.var
    if X is None:
        raise CellInputError(f"{path}: the file has no expression matrix X")
    if adata.n_obs == 0 or var.shape[0] == 0:
        raise CellInputError(
            f"{path}: empty ({adata.n_obs} cells x {var.shape[0]} genes); nothing to read"
        )
    return X, var


def labelled_only(cells: CellMatrix, unusable: Sequence[str] = UNUSABLE_LABELS) -> CellMatrix:
    """The cells with a usable label (not empty / "Unknown")."""
    if cells.labels is None:
        raise CellInputError(f"{cells.path}: has no labels to train on")
    return cells.subset(~np.isin(cells.labels, list(unusable)))


@dataclass
class GeneMapping:
    """Which columns of a file map to which vocabulary token ids."""

    columns: np.ndarray  # column indices of the file's genes that are in the vocabulary
    token_ids: np.ndarray  # their token ids
    n_file_genes: int
    n_vocab_genes: int

    @property
    def overlap(self) -> int:
        return int(self.columns.size)

    def report(self) -> dict:
        return {
            "genes_in_file": self.n_file_genes,
            "genes_in_vocabulary": self.n_vocab_genes,
            "genes_mapped": self.overlap,
            "fraction_of_file": round(self.overlap / max(self.n_file_genes, 1), 4),
            "fraction_of_vocabulary": round(self.overlap / max(self.n_vocab_genes, 1), 4),
        }


def strip_version(gene: str) -> str:
    return gene.split(".")[0] if ENSEMBL_ID.match(gene) else gene


def map_genes(
    cells: CellMatrix,
    vocab_ids: dict[str, int],
    *,
    min_genes: int = 1,
    allowed: set[str] | None = None,
) -> GeneMapping:
    """Columns of ``cells`` whose gene is in ``vocab_ids`` (and in ``allowed`` when given);
    fewer than ``min_genes`` is an error naming the file and the overlap."""
    token_ids = np.array(
        [vocab_ids.get(g, vocab_ids.get(strip_version(g), -1)) for g in cells.genes],
        dtype=np.int64,
    )
    if allowed is not None:
        token_ids[~np.isin(cells.genes, list(allowed))] = -1
    columns = np.flatnonzero(token_ids >= 0)
    total = len(allowed) if allowed is not None else len(vocab_ids)
    mapping = GeneMapping(columns, token_ids[columns], len(cells.genes), total)
    if mapping.overlap < max(min_genes, 1):
        example = ", ".join(map(str, cells.genes[:3]))
        raise CellInputError(
            f"{cells.path}: only {mapping.overlap} of its {len(cells.genes)} genes are in the "
            f"model's gene vocabulary (minimum {min_genes}; file genes look like {example}); "
            "check gene_column (symbols or Ensembl ids)"
        )
    return mapping


@dataclass
class CellTokens:
    """Per-cell token ids and expression values over the mapped genes (normalised later)."""

    token_ids: list[np.ndarray]
    values: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.token_ids)


def cell_tokens(cells: CellMatrix, mapping: GeneMapping) -> CellTokens:
    """Each cell's expressed mapped genes (token ids, ascending) and their values."""
    matrix = cells.values[:, mapping.columns].tocsr()
    matrix.eliminate_zeros()
    ids, values = [], []
    for row in range(matrix.shape[0]):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        token_ids = mapping.token_ids[matrix.indices[lo:hi]]
        order = np.argsort(token_ids, kind="stable")
        ids.append(token_ids[order])
        values.append(np.asarray(matrix.data[lo:hi], dtype=np.float64)[order])
    return CellTokens(ids, values)


def bin_values(values: np.ndarray, num_bins: int, target_sum: float = 1e4) -> np.ndarray:
    """Bins of one cell's values, normalised to ``target_sum`` over the given genes (the
    preprocessing rule, :func:`wensu.data.cell_binning.expression_bins`)."""
    total = float(values.sum())
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    return expression_bins(values * (target_sum / total), num_bins).astype(np.int64)
