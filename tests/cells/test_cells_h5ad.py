"""Reading .h5ad files: real shared files against SOURCES.md, and the catalogue of bad inputs."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import require_shared
from scipy import sparse
from wensu.preprocessing.cells.h5ad import H5adCells, H5adError, ReadOptions, normalise_barcode

SINGLECELL = "singlecell"


def make_h5ad(path: Path, X, genes, *, obs=None, var=None, dense=False) -> Path:
    """A small AnnData file: ``X`` cells x genes, obs columns from ``obs`` (dict)."""
    X = np.asarray(X)
    cells = [f"cell{i}" for i in range(X.shape[0])]
    frame = pd.DataFrame(obs or {"cell_type_coarse": ["B"] * X.shape[0]}, index=cells)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata warns on repeated var names
        adata = ad.AnnData(
            X=X if dense else sparse.csr_matrix(X),
            obs=frame,
            var=pd.DataFrame(var or {}, index=pd.Index(genes, dtype=str)),
        )
        adata.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    "name, shape, nnz, column, expected",
    [
        (
            "pbmc3k_seurat_annotated",
            (2638, 13714),
            2_238_732,
            "cell_type",
            {"Naive CD4 T": 697, "Platelet": 14},
        ),
        ("kang2018_ifnb_stim_muscat_806", (806, 1267), 313_381, "cell_type", {"B cells": 154}),
        (
            "pbmc_10x_3pv1_3pv2_5p_symphony_1500",
            (1500, 1764),
            305_064,
            "cell_type",
            {"T_CD4": 474, "HSC": 3},
        ),
    ],
)
def test_real_files_match_sources(name, shape, nnz, column, expected):
    path = require_shared(f"{SINGLECELL}/{name}.h5ad")
    options = ReadOptions(label_columns=(column, "cell_type_coarse"))
    with H5adCells(path, options) as cells:
        assert (cells.n_cells, cells.symbols.size) == shape
        assert cells.dataset == name
        total = 0
        for start in range(0, cells.n_cells, 1000):
            chunk = cells.read_rows(start, start + 1000)
            assert np.all(chunk.data == np.round(chunk.data)) and chunk.data.min() >= 1
            assert (cells.count_problems(chunk, start) == "").all()
            total += chunk.nnz
        assert total == nnz
        counts = Counter(cells.labels[column])
        assert {k: counts[k] for k in expected} == expected
        assert cells.warnings == []


def test_real_donors_and_barcodes():
    path = require_shared(f"{SINGLECELL}/kang2018_ifnb_stim_muscat_806.h5ad")
    with H5adCells(path) as cells:
        assert Counter(cells.donors) == {"101": 500, "107": 306}
        assert cells.barcodes[0] == "TGAACCGATCCAAG"
    assert normalise_barcode("fivePrime_GATCGCGAGACCGGAT") == "GATCGCGAGACCGGAT"
    assert normalise_barcode("bcellsAAAGATCTCCGAAT-1") == "AAAGATCTCCGAAT"
    assert normalise_barcode("V3_9782") == ""


def test_ensembl_ids_converted_through_symbol_column(tmp_path):
    path = make_h5ad(
        tmp_path / "ens.h5ad",
        [[1, 2, 3], [0, 4, 0]],
        ["ENSG00000167286", "ENSG00000090382", "ENSG00000000001"],
        var={"gene_symbols": ["CD3D", "LYZ", ""]},
    )
    with H5adCells(path) as cells:
        assert cells.symbols.tolist() == ["CD3D", "LYZ"]
        assert cells.dropped_genes == {"ENSG00000000001": "no_symbol"}
        np.testing.assert_array_equal(cells.read_rows(0, 2).toarray(), [[1, 2], [0, 4]])
        assert any("Ensembl" in w for w in cells.warnings)


def test_ensembl_ids_without_symbols_refused(tmp_path):
    path = make_h5ad(tmp_path / "ens_only.h5ad", [[1, 2]], ["ENSG00000167286", "ENSG00000090382.4"])
    with pytest.raises(H5adError, match="Ensembl gene ids") as info:
        H5adCells(path)
    assert str(path) in str(info.value)


def test_dense_matrix_reads_like_sparse(tmp_path):
    X = [[0, 3, 1], [2, 0, 0], [0, 0, 7]]
    dense = make_h5ad(tmp_path / "dense.h5ad", X, ["A", "B", "C"], dense=True)
    csr = make_h5ad(tmp_path / "csr.h5ad", X, ["A", "B", "C"])
    with H5adCells(dense) as d, H5adCells(csr) as s:
        a, b = d.read_rows(0, 3), s.read_rows(0, 3)
        assert (a != b).nnz == 0 and a.nnz == 4
        np.testing.assert_array_equal(
            d.read_cells(np.array([2, 0])).toarray(), [[0, 0, 7], [0, 3, 1]]
        )


def test_normalised_values_refused_quarantined_or_kept(tmp_path):
    path = make_h5ad(
        tmp_path / "lognorm.h5ad", [[0.0, 1.386, 2.0], [1.0, 2.0, 0.0]], ["A", "B", "C"]
    )
    with H5adCells(path) as cells:
        with pytest.raises(H5adError, match="not integers") as info:
            cells.count_problems(cells.read_rows(0, 2), 0)
        assert str(path) in str(info.value) and "cell0" in str(info.value)
    with H5adCells(path, ReadOptions(on_non_integer="quarantine")) as cells:
        assert cells.count_problems(cells.read_rows(0, 2), 0).tolist() == ["non_integer_values", ""]
    with H5adCells(path, ReadOptions(on_non_integer="warn")) as cells:
        assert cells.count_problems(cells.read_rows(0, 2), 0).tolist() == ["", ""]
        assert any("kept as given" in w and str(path) in w for w in cells.warnings)


def test_negative_values_never_binned(tmp_path):
    path = make_h5ad(tmp_path / "negative.h5ad", [[1, -2], [1, 1]], ["A", "B"])
    with H5adCells(path) as cells, pytest.raises(H5adError, match="negative"):
        cells.count_problems(cells.read_rows(0, 2), 0)
    with H5adCells(path, ReadOptions(on_non_integer="warn")) as cells:
        assert cells.count_problems(cells.read_rows(0, 2), 0).tolist() == ["negative_values", ""]


def test_missing_label_column_unlabelled_or_error(tmp_path):
    path = make_h5ad(tmp_path / "nolabel.h5ad", [[1, 2]], ["A", "B"], obs={"batch": ["x"]})
    with H5adCells(path) as cells:
        assert cells.labels["cell_type_coarse"].tolist() == [""]
        assert any("no label column 'cell_type_coarse'" in w for w in cells.warnings)
    with pytest.raises(H5adError, match="no label column 'cell_type'") as info:
        H5adCells(path, ReadOptions(label_columns=("cell_type",), on_missing_label="error"))
    assert str(path) in str(info.value) and "batch" in str(info.value)


def test_missing_label_values_become_empty(tmp_path):
    path = make_h5ad(
        tmp_path / "nan.h5ad",
        [[1], [2]],
        ["A"],
        obs={"cell_type_coarse": pd.Categorical(["B", None])},
    )
    with H5adCells(path) as cells:
        assert cells.labels["cell_type_coarse"].tolist() == ["B", ""]


def test_duplicated_symbols_summed_or_first_kept(tmp_path):
    path = make_h5ad(tmp_path / "dupgenes.h5ad", [[1, 2, 3, 4], [0, 5, 0, 6]], ["A", "B", "A", "C"])
    with H5adCells(path) as cells:
        assert cells.symbols.tolist() == ["A", "B", "C"]
        np.testing.assert_array_equal(cells.read_rows(0, 2).toarray(), [[4, 2, 4], [0, 5, 6]])
        assert cells.duplicated_genes == ["A"]
        assert any("duplicated gene symbols (summed): A" in w for w in cells.warnings)
    with H5adCells(path, ReadOptions(duplicate_genes="first")) as cells:
        np.testing.assert_array_equal(cells.read_rows(0, 2).toarray(), [[1, 2, 4], [0, 5, 6]])


def test_unreadable_files_named(tmp_path):
    text = tmp_path / "notes.h5ad"
    text.write_text("this is not HDF5\n")
    with pytest.raises(H5adError, match="not a readable") as info:
        H5adCells(text)
    assert str(text) in str(info.value)
    with pytest.raises(H5adError, match="file not found"):
        H5adCells(tmp_path / "absent.h5ad")
    bare = tmp_path / "bare.h5ad"
    with h5py.File(bare, "w") as h5:
        h5.create_dataset("something", data=[1, 2])
    with pytest.raises(H5adError, match="no count matrix 'X'") as info:
        H5adCells(bare)
    assert str(bare) in str(info.value)


def test_shape_mismatch_and_raw_matrix(tmp_path):
    path = make_h5ad(tmp_path / "raw.h5ad", [[1, 2]], ["A", "B"])
    with pytest.raises(H5adError, match="no count matrix 'layers/counts'"):
        H5adCells(path, ReadOptions(matrix="layers/counts"))
    with h5py.File(path, "a") as h5:
        h5["X"].attrs["shape"] = np.array([1, 5])
    with pytest.raises(H5adError, match="1 x 5 but obs has 1 cells"):
        H5adCells(path)
