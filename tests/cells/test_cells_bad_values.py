"""Non-finite and negative expression values never reach the bins; zero cells/genes is an error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cells_h5ad import make_h5ad
from wensu.preprocessing.cells import run_cells
from wensu.preprocessing.cells.h5ad import H5adError
from wensu.preprocessing.errors import EmptyDatasetError

GENES = [f"G{i}" for i in range(6)]
COUNTS = np.array(
    [[1, 2, 3, 4, 5, 6], [2, 2, 1, 1, 3, 9], [4, 0, 2, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=float
)
SETTINGS = {"filters": {"min_genes": 1, "min_cells": 1}, "progress": False}


def _with(value: float, row: int, column: int) -> np.ndarray:
    counts = COUNTS.copy()
    counts[row, column] = value
    return counts


@pytest.mark.parametrize("policy", ["quarantine", "warn"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [(np.nan, "non_finite_values"), (np.inf, "non_finite_values"), (-3.0, "negative_values")],
)
def test_bad_values_are_quarantined(tmp_path, value, reason, policy):
    path = make_h5ad(tmp_path / "bad.h5ad", _with(value, 1, 2), GENES)
    out = tmp_path / "out"
    summary = run_cells(input=[str(path)], output=str(out), on_non_integer=policy, **SETTINGS)
    counts = summary["counts"]
    assert (counts["read"], counts["written"]) == (4, 3)
    assert counts["quarantined_by_reason"] == {reason: 1}
    rows = (out / "quarantine.tsv").read_text().splitlines()
    assert rows[1].split("\t") == ["bad", "cell1", reason]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["quarantined"] == 1


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-3.0, "negative")])
def test_bad_values_under_error_policy_name_file_and_cell(tmp_path, value, shown):
    path = make_h5ad(tmp_path / "bad.h5ad", _with(value, 2, 0), GENES)
    with pytest.raises(H5adError) as caught:
        run_cells(input=[str(path)], output=str(tmp_path / "out"), on_non_integer="error",
                  **SETTINGS)  # fmt: skip
    message = str(caught.value)
    assert message.startswith(str(path)) and "'cell2'" in message and shown in message
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("shape", [(0, 6), (4, 0)])
def test_zero_cells_or_genes_is_an_error(tmp_path, shape):
    path = make_h5ad(tmp_path / "empty.h5ad", np.zeros(shape), GENES[: shape[1]])
    with pytest.raises(H5adError, match="no cells or no genes"):
        run_cells(input=[str(path)], output=str(tmp_path / "out"), **SETTINGS)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_every_cell_removed_is_an_error_naming_the_report(tmp_path):
    counts = COUNTS.copy()
    counts[:, 0] = np.nan
    path = make_h5ad(tmp_path / "allbad.h5ad", counts, GENES)
    out = tmp_path / "out"
    with pytest.raises(EmptyDatasetError) as caught:
        run_cells(input=[str(path)], output=str(out), on_non_integer="quarantine", **SETTINGS)
    assert str(out / "quarantine.tsv") in str(caught.value)
    assert "0 of 4 cells kept" in str(caught.value)
    assert len((out / "quarantine.tsv").read_text().splitlines()) == 5
    assert not (out / "manifest.json").exists()
