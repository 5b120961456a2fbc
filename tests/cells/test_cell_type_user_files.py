"""cell_type probe on user .h5ad files: any path, a label column per file (`path.h5ad:column`),
gene ids as symbols or Ensembl ids (mapped through a var symbol column), and bad user files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
from cell_helpers import KANG, PBMC3K, tiny_pretrained, write_h5ad

WENSU_EVAL = str(Path(sys.executable).parent / "wensu-eval")
FAST = [
    "probe=cell_type",
    "progress=false",
    "probe.cell_type.within=null",
    "probe.cell_type.held_out_donor=null",
    "probe.cell_type.Cs=[1.0]",
    "probe.cell_type.n_hvg=200",
    "probe.cell_type.n_pcs=10",
    "probe.cell_type.embedding_plot_cells=100",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_pretrained(tmp_path_factory.mktemp("ckpt") / "cells.ckpt")


@pytest.fixture(scope="module")
def renamed_test_file(tmp_path_factory) -> Path:
    """The pbmc3k cut with Ensembl-style var_names, symbols in var['gene_symbol'] and its labels
    in an obs column of another name."""
    cut = ad.read_h5ad(PBMC3K)
    ids = [f"ENSG{i:011d}" for i in range(cut.n_vars)]
    obs = {"annotation": list(cut.obs["cell_type_coarse"].astype(str))}
    folder = tmp_path_factory.mktemp("user")
    return write_h5ad(
        folder / "my_pbmc.h5ad", cut.X, ids, obs=obs, var={"gene_symbol": list(cut.var_names)}
    )


def _eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [WENSU_EVAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_user_paths_with_label_columns_and_ensembl_ids(checkpoint, renamed_test_file, tmp_path):
    result = _eval(
        [
            f"checkpoint={checkpoint}",
            *FAST,
            "output=out",
            f"probe.cell_type.train_files=[{KANG},{PBMC3K}:cell_type_coarse]",
            f"probe.cell_type.test_files=[{renamed_test_file}:annotation]",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "cell_type" / "metrics.json").read_text())
    assert {row["task"] for row in payload["rows"]} == {"cross: my_pbmc"}
    cross = payload["details"]["tasks"]["cross: my_pbmc"]
    # The Ensembl ids were mapped to symbols: the file shares the training genes.
    assert cross["genes_test_embedding"] == len(
        set(ad.read_h5ad(KANG, backed="r").var_names) & set(ad.read_h5ad(PBMC3K).var_names)
    )
    assert cross["model"]["n"] == 224 and 0 <= cross["LR-HVG"]["macro_f1"] <= 1


def _error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_bad_user_files_are_one_line_errors(checkpoint, renamed_test_file, tmp_path):
    base = [f"checkpoint={checkpoint}", *FAST, f"probe.cell_type.train_files=[{KANG},{PBMC3K}]"]
    line = _error(_eval([*base, f"probe.cell_type.test_files=[{renamed_test_file}]"], tmp_path))
    assert str(renamed_test_file) in line and "no label column 'cell_type_coarse'" in line
    cut = ad.read_h5ad(PBMC3K)
    few = write_h5ad(
        tmp_path / "few.h5ad",
        cut.X[:, :20],
        cut.var_names[:20],
        obs={"cell_type_coarse": list(cut.obs["cell_type_coarse"].astype(str))},
    )
    line = _error(_eval([*base, f"probe.cell_type.test_files=[{few}]"], tmp_path))
    assert "few: shares only" in line and "min_shared_genes=50" in line
    line = _error(
        _eval([*base, "probe.cell_type.gene_column=symbol", f"probe.cell_type.test_files=[{few}]"],
              tmp_path)
    )  # fmt: skip
    assert "var has no column 'symbol'" in line
    line = _error(_eval([*base, "probe.cell_type.test_files=[nowhere.h5ad]"], tmp_path))
    assert "nowhere.h5ad: cell-type probe input not found" in line
