"""Cells that occur in two input files: found, and one copy dropped, before anything is counted.

Three rules, applied in this order (a cell dropped by one is not looked at again):

1. ``flag_columns``: an obs column marks cells already known to be in another dataset; they
   are dropped when that dataset is among the inputs (kept otherwise: then they are unique).
2. ``label_pairs``: the same barcode with the same label in a given column (for copies whose
   counts were processed slightly differently upstream); the ``drop`` dataset's copy goes.
3. ``match_counts``: any two inputs sharing a barcode whose counts are identical and non-zero
   on the genes both files measure (the definition SOURCES.md uses). The copy without labels
   is dropped; if both or neither have labels, the one from the later input.

A barcode is the last run of >= 10 A/C/G/T in the barcode column or the cell name; files without
barcodes (e.g. cells named ``V3_9782``) cannot be matched and are left as they are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .h5ad import H5adCells


@dataclass(frozen=True)
class DuplicateCell:
    """One dropped copy and the copy that was kept."""

    dataset: str
    cell_id: str
    kept_dataset: str
    kept_cell_id: str
    rule: str


def _barcode_rows(cells: H5adCells, dropped: np.ndarray) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for row, barcode in enumerate(cells.barcodes):
        if barcode and not dropped[row]:
            rows[barcode].append(row)
    return rows


def _labelled(cells: H5adCells, row: int) -> bool:
    return any(values[row] for values in cells.labels.values())


def find_duplicates(
    files: list[H5adCells],
    *,
    flag_columns: dict[str, str],
    label_pairs: list[dict],
    match_counts: bool,
) -> tuple[dict[str, np.ndarray], list[DuplicateCell]]:
    """Per dataset a bool mask of cells to drop, and the list of dropped copies."""
    by_name = {f.dataset: f for f in files}
    dropped = {f.dataset: np.zeros(f.n_cells, dtype=bool) for f in files}
    found: list[DuplicateCell] = []

    for cells in files:
        for column, partner in sorted(flag_columns.items()):
            if column not in cells.obs or partner not in by_name or partner == cells.dataset:
                continue
            flagged = (
                cells.obs[column].fillna(False).astype(bool).to_numpy() & ~dropped[cells.dataset]
            )
            partner_rows = _barcode_rows(by_name[partner], dropped[partner])
            for row in np.flatnonzero(flagged):
                match = partner_rows.get(cells.barcodes[row], [])
                kept = by_name[partner].cell_ids[match[0]] if match else ""
                found.append(
                    DuplicateCell(cells.dataset, cells.cell_ids[row], partner, kept, column)
                )
            dropped[cells.dataset] |= flagged

    for pair in label_pairs:
        keep, drop, column = by_name.get(pair["keep"]), by_name.get(pair["drop"]), pair["column"]
        if keep is None or drop is None or column not in keep.obs or column not in drop.obs:
            continue
        keep_labels = keep.obs[column].astype(str).to_numpy()
        drop_labels = drop.obs[column].astype(str).to_numpy()
        keep_rows = _barcode_rows(keep, dropped[keep.dataset])
        for barcode, rows in _barcode_rows(drop, dropped[drop.dataset]).items():
            for row in rows:
                same = [k for k in keep_rows.get(barcode, []) if keep_labels[k] == drop_labels[row]]
                if same and drop_labels[row] not in ("", "nan"):
                    dropped[drop.dataset][row] = True
                    found.append(
                        DuplicateCell(
                            drop.dataset,
                            drop.cell_ids[row],
                            keep.dataset,
                            keep.cell_ids[same[0]],
                            f"label_pair:{column}",
                        )
                    )

    if match_counts:
        for i, first in enumerate(files):
            for second in files[i + 1 :]:
                found.extend(_same_counts(first, second, dropped))
    return dropped, found


def _same_counts(
    first: H5adCells, second: H5adCells, dropped: dict[str, np.ndarray]
) -> list[DuplicateCell]:
    rows_a = _barcode_rows(first, dropped[first.dataset])
    rows_b = _barcode_rows(second, dropped[second.dataset])
    pairs = [
        (a, b)
        for code in sorted(rows_a.keys() & rows_b.keys())
        for a in rows_a[code]
        for b in rows_b[code]
    ]
    if not pairs:
        return []
    _, cols_a, cols_b = np.intersect1d(first.symbols, second.symbols, return_indices=True)
    if cols_a.size == 0:
        return []
    a_rows = np.array([a for a, _ in pairs])
    b_rows = np.array([b for _, b in pairs])
    counts_a = first.read_cells(a_rows)[:, cols_a]
    counts_b = second.read_cells(b_rows)[:, cols_b]
    equal = np.asarray((counts_a != counts_b).sum(axis=1) == 0).ravel()
    nonzero = np.asarray(counts_a.sum(axis=1)).ravel() > 0
    out = []
    for k in np.flatnonzero(equal & nonzero):
        a, b = int(a_rows[k]), int(b_rows[k])
        if dropped[first.dataset][a] or dropped[second.dataset][b]:
            continue
        drop_first = _labelled(second, b) and not _labelled(first, a)
        lose, lose_row, win, win_row = (
            (first, a, second, b) if drop_first else (second, b, first, a)
        )
        dropped[lose.dataset][lose_row] = True
        out.append(
            DuplicateCell(
                lose.dataset,
                lose.cell_ids[lose_row],
                win.dataset,
                win.cell_ids[win_row],
                "same_counts",
            )
        )
    return out
