"""Reading and validating one AnnData ``.h5ad`` file of raw counts, chunk by chunk.

The file is opened with h5py and its ``obs``/``var`` tables read with anndata's element reader;
the count matrix is never loaded whole when it is CSR or dense: rows are sliced on demand, so a
file larger than memory streams. Genes come out as unique symbols: Ensembl ids are converted
through a symbol column of ``var`` (or refused), duplicated symbols are summed or the first kept.
Every problem raises an :class:`H5adError` whose message starts with the file's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from wensu.cell_vocab import ENSEMBL_ID, SYMBOL_COLUMNS

from ..errors import InputError

try:
    from anndata.io import read_elem
except ImportError:  # anndata < 0.11
    from anndata.experimental import read_elem

BARCODE = re.compile(r"[ACGT]{10,}")
DEFAULT_SYMBOL_COLUMNS = SYMBOL_COLUMNS
NON_INTEGER_POLICIES = ("error", "warn", "quarantine")
DUPLICATE_GENE_POLICIES = ("sum", "first")
MISSING_LABEL_POLICIES = ("unlabelled", "error")


class H5adError(InputError):
    """An .h5ad file cannot be used as it is; the message names the file and the reason."""


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file: which matrix, which obs columns, and what to do with oddities."""

    label_columns: tuple[str, ...] = ("cell_type_coarse", "cell_type")
    on_missing_label: str = "unlabelled"
    donor_column: str | None = "donor_id"
    barcode_column: str | None = "barcode"
    symbol_columns: tuple[str, ...] = DEFAULT_SYMBOL_COLUMNS
    duplicate_genes: str = "sum"
    on_non_integer: str = "error"
    matrix: str = "X"


def dataset_name(path: str | Path) -> str:
    """The dataset name of an input file: its name without ``.h5ad``."""
    name = Path(path).name
    return name[: -len(".h5ad")] if name.endswith(".h5ad") else Path(path).stem


def normalise_barcode(name: str) -> str:
    """The cell barcode in a cell name (last run of >= 10 A/C/G/T), "" when there is none."""
    runs = BARCODE.findall(str(name))
    return runs[-1] if runs else ""


class H5adCells:
    """An open .h5ad file: cell metadata in memory, counts read by row ranges.

    Attributes: ``path``, ``dataset``, ``n_cells``, ``cell_ids``, ``barcodes``, ``labels``
    (column -> str array, "" = unlabelled), ``donors`` (str array, "" = unknown), ``obs`` (the
    whole obs table, for flag columns), ``symbols`` (unique gene
    symbols = the columns of every matrix this object returns), ``dropped_genes`` (symbol ->
    reason for genes removed while reading), ``warnings`` (messages naming the file).
    """

    def __init__(self, path: str | Path, options: ReadOptions = ReadOptions()):
        self.path = Path(path)
        self.options = options
        self.dataset = dataset_name(self.path)
        self.warnings: list[str] = []
        self.dropped_genes: dict[str, str] = {}
        if not self.path.is_file():
            raise H5adError(f"{self.path}: file not found")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise H5adError(f"{self.path}: not a readable .h5ad (HDF5) file ({err})") from None
        try:
            self._load_metadata()
        except BaseException:
            self._h5.close()
            raise

    def __enter__(self) -> H5adCells:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    # ---- metadata ---------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        raise H5adError(f"{self.path}: {message}")

    def _element(self, key: str):
        if key not in self._h5:
            self._fail(f"has no {key!r} element (top-level keys: {sorted(self._h5.keys())})")
        try:
            return read_elem(self._h5[key])
        except Exception as err:  # anndata raises many types for malformed elements
            self._fail(f"element {key!r} is unreadable ({type(err).__name__}: {err})")

    def _load_metadata(self) -> None:
        options = self.options
        matrix_key = "raw/X" if options.matrix == "raw" else options.matrix
        var_key = "raw/var" if options.matrix == "raw" else "var"
        if matrix_key not in self._h5:
            self._fail(f"has no count matrix {matrix_key!r} (top-level keys: {sorted(self._h5)})")
        obs = self._element("obs")
        var = self._element(var_key)
        self._open_matrix(self._h5[matrix_key], matrix_key)
        if self._shape != (len(obs), len(var)):
            self._fail(
                f"matrix {matrix_key!r} is {self._shape[0]} x {self._shape[1]} but obs has "
                f"{len(obs)} cells and {var_key} has {len(var)} genes"
            )
        if 0 in self._shape:  # empty is an error, not a dataset
            self._fail(
                f"matrix {matrix_key!r} is {self._shape[0]} x {self._shape[1]}: "
                "no cells or no genes"
            )
        self.n_cells = len(obs)
        self.cell_ids = np.array([str(x) for x in obs.index], dtype=object)
        if len(set(self.cell_ids)) != self.n_cells:
            self._fail("obs_names (cell ids) are not unique; cell keys would be ambiguous")
        self.labels = {c: self._label_column(obs, c) for c in options.label_columns}
        donor = options.donor_column
        self.donors = _string_column(obs[donor]) if donor and donor in obs else _empty(self.n_cells)
        source = obs[options.barcode_column] if options.barcode_column in obs else obs.index
        self.barcodes = np.array([normalise_barcode(x) for x in source], dtype=object)
        self.obs = obs
        self._set_genes(var)

    def _label_column(self, obs: pd.DataFrame, column: str) -> np.ndarray:
        if column in obs:
            return _string_column(obs[column])
        message = f"has no label column {column!r} in obs (columns: {sorted(obs.columns)})"
        if self.options.on_missing_label == "error":
            self._fail(message + "; set label_columns or on_missing_label=unlabelled")
        self.warnings.append(f"{self.path}: {message}; its cells are unlabelled for it")
        return _empty(self.n_cells)

    def _set_genes(self, var: pd.DataFrame) -> None:
        names = np.array([str(x) for x in var.index], dtype=object)
        if len(names) and np.mean([bool(ENSEMBL_ID.match(n)) for n in names]) > 0.5:
            column = next((c for c in self.options.symbol_columns if c in var), None)
            if column is None:
                self._fail(
                    "var_names are Ensembl gene ids (e.g. "
                    f"{names[0]!r}) and var has no symbol column among "
                    f"{list(self.options.symbol_columns)}; the vocabulary is by gene symbol, so "
                    "add a symbol column to var (or name yours in symbol_columns)"
                )
            symbols = _string_column(var[column])
            self.warnings.append(
                f"{self.path}: var_names are Ensembl ids; gene symbols taken from var[{column!r}]"
            )
            for ensembl, symbol in zip(names, symbols, strict=True):
                if not symbol:
                    self.dropped_genes[ensembl] = "no_symbol"
            names = np.array([s if s else "" for s in symbols], dtype=object)
        keep = names != ""
        unique, first_index, inverse = np.unique(
            names[keep], return_index=True, return_inverse=True
        )
        # Keep the file's gene order (first occurrence), not alphabetical order.
        order = np.argsort(first_index, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        self.symbols = unique[order]
        column_of = np.full(names.size, -1, dtype=np.int64)
        column_of[keep] = rank[inverse]
        repeated = self.symbols[np.bincount(column_of[keep], minlength=self.symbols.size) > 1]
        if repeated.size:
            policy = self.options.duplicate_genes
            if policy == "first":
                seen = np.zeros(self.symbols.size, dtype=bool)
                for j, target in enumerate(column_of):
                    if target >= 0:
                        column_of[j] = -1 if seen[target] else target
                        seen[target] = True
            shown = ", ".join(repeated[:20]) + (" ..." if repeated.size > 20 else "")
            action = "summed" if policy == "sum" else "first column kept"
            self.warnings.append(
                f"{self.path}: {repeated.size} duplicated gene symbols ({action}): {shown}"
            )
            self.duplicated_genes = [str(s) for s in repeated]
        else:
            self.duplicated_genes = []
        identity = bool(np.array_equal(column_of, np.arange(names.size)))
        self._column_of = None if identity else column_of

    # ---- counts -----------------------------------------------------------------------------

    def _open_matrix(self, node, key: str) -> None:
        if isinstance(node, h5py.Dataset):
            if node.ndim != 2:
                self._fail(f"matrix {key!r} is {node.ndim}-dimensional, expected cells x genes")
            self._kind, self._node, self._shape = "dense", node, tuple(node.shape)
            return
        encoding = _attr(node, "encoding-type") or _attr(node, "h5sparse_format")
        shape = node.attrs.get("shape", node.attrs.get("h5sparse_shape"))
        if encoding in ("csr_matrix", "csr") and shape is not None:
            self._kind, self._node, self._shape = "csr", node, tuple(int(s) for s in shape)
            self._indptr = np.asarray(node["indptr"][:], dtype=np.int64)
        elif encoding in ("csc_matrix", "csc"):
            # CSC cannot be sliced by rows cheaply: read it once, convert.
            matrix = sparse.csr_matrix(self._element(key))
            self._kind, self._node, self._shape = "memory", matrix, matrix.shape
            self.warnings.append(f"{self.path}: {key!r} is CSC; it was read into memory whole")
        else:
            self._fail(f"matrix {key!r} has an unknown encoding {encoding!r}")

    def read_rows(self, start: int, stop: int) -> sparse.csr_matrix:
        """Cells ``start:stop`` as a float64 CSR matrix over :attr:`symbols` (no stored zeros)."""
        stop = min(stop, self.n_cells)
        try:
            if self._kind == "csr":
                lo, hi = int(self._indptr[start]), int(self._indptr[stop])
                matrix = sparse.csr_matrix(
                    (
                        np.asarray(self._node["data"][lo:hi], dtype=np.float64),
                        np.asarray(self._node["indices"][lo:hi], dtype=np.int64),
                        self._indptr[start : stop + 1] - lo,
                    ),
                    shape=(stop - start, self._shape[1]),
                )
            elif self._kind == "dense":
                matrix = sparse.csr_matrix(np.asarray(self._node[start:stop], dtype=np.float64))
            else:
                matrix = self._node[start:stop].astype(np.float64)
        except (OSError, ValueError, KeyError) as err:
            raise H5adError(f"{self.path}: cannot read cells {start}-{stop} ({err})") from None
        return self._merge_genes(matrix)

    def read_cells(self, indices: np.ndarray) -> sparse.csr_matrix:
        """The cells at (any) row ``indices``, in that order."""
        rows = [self.read_rows(int(i), int(i) + 1) for i in indices]
        return (
            sparse.vstack(rows, format="csr")
            if rows
            else self._merge_genes(sparse.csr_matrix((0, self._shape[1])))
        )

    def _merge_genes(self, matrix: sparse.csr_matrix) -> sparse.csr_matrix:
        if self._column_of is not None:
            coo = matrix.tocoo()
            target = self._column_of[coo.col]
            keep = target >= 0
            # Building CSR from COO sums entries that land in the same (cell, gene).
            matrix = sparse.csr_matrix(
                (coo.data[keep], (coo.row[keep], target[keep])),
                shape=(matrix.shape[0], self.symbols.size),
            )
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return matrix

    def count_problems(self, matrix: sparse.csr_matrix, first_row: int) -> np.ndarray:
        """Per cell of a chunk: "" or the quarantine reason (``non_finite_values``,
        ``non_integer_values``, ``negative_values``), after the ``on_non_integer`` policy
        (``error`` raises; non-finite values are quarantined under ``warn`` as well)."""
        reasons = np.full(matrix.shape[0], "", dtype=object)
        data = matrix.data
        finite = np.isfinite(data)
        bad_value = finite & (data != np.round(data))
        negative = finite & (data < 0)
        if finite.all() and not (bad_value.any() or negative.any()):
            return reasons
        row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        policy = self.options.on_non_integer
        if not finite.all():  # NaN/inf would become garbage bins: never kept, whatever the policy
            first = int(np.flatnonzero(~finite)[0])
            cell = self.cell_ids[first_row + row_of[first]]
            if policy == "error":
                raise H5adError(
                    f"{self.path}: cell {cell!r} has a non-finite value ({float(data[first])}); "
                    "on_non_integer=quarantine sets such cells aside"
                )
            reasons[np.unique(row_of[~finite])] = "non_finite_values"
        if bad_value.any():
            first = int(np.flatnonzero(bad_value)[0])
            cell = self.cell_ids[first_row + row_of[first]]
            message = (
                f"{self.path}: counts are not integers (cell {cell!r} has {data[first]!r}); "
                "the pipeline expects raw UMI counts, not normalised values"
            )
            if policy == "error":
                raise H5adError(message + " (on_non_integer=warn or quarantine to go on)")
            if policy == "quarantine":
                reasons[np.unique(row_of[bad_value])] = "non_integer_values"
            elif message not in self.warnings:
                self.warnings.append(message + "; kept as given (on_non_integer=warn)")
        if negative.any():
            if policy == "error":
                cell = self.cell_ids[first_row + row_of[int(np.flatnonzero(negative)[0])]]
                raise H5adError(f"{self.path}: cell {cell!r} has negative values; not counts")
            negative_rows = np.unique(row_of[negative])
            reasons[negative_rows[reasons[negative_rows] == ""]] = "negative_values"
        return reasons


def _attr(node, name: str) -> str | None:
    value = node.attrs.get(name)
    return value.decode() if isinstance(value, bytes) else value


def _empty(n: int) -> np.ndarray:
    return np.full(n, "", dtype=object)


def _string_column(series: pd.Series) -> np.ndarray:
    """Strings of a column; missing values become "" (unlabelled / unknown)."""
    values = series.astype(object).where(series.notna(), "")
    return np.array([str(v) for v in values], dtype=object)
