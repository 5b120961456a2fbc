"""wensu-annotate: round trip on real cells, the documented output fields, and every bad input
(one-line errors, exit 2 from the CLI)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from cell_helpers import (
    KANG,
    PBMC3K,
    load_cut,
    proba_of,
    tiny_classifier,
    tiny_pretrained,
    write_h5ad,
)
from scipy import sparse

from wensu.annotate import AnnotateError, annotate

ANNOTATE = str(Path(sys.executable).parent / "wensu-annotate")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("clf") / "classifier.ckpt")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [ANNOTATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_round_trip_writes_the_documented_fields(classifier, tmp_path):
    before = _sha(PBMC3K)
    out = tmp_path / "annotated.h5ad"
    result = _cli([f"checkpoint={classifier}", f"input={PBMC3K}", f"output={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _sha(PBMC3K) == before  # the input is never modified
    adata, source = ad.read_h5ad(out), load_cut()
    assert list(adata.obs_names) == list(source.obs_names)
    assert (adata.X != source.X).nnz == 0
    classes = list(adata.uns["wensu_classes"])
    proba = np.asarray(adata.obsm["wensu_proba"])
    assert proba.shape == (adata.n_obs, len(classes))
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert adata.obsm["X_wensu"].shape == (adata.n_obs, 16)
    confidence = adata.obs["wensu_confidence"].to_numpy()
    np.testing.assert_allclose(confidence, proba.max(1), rtol=1e-6)
    called = adata.obs["wensu_cell_type"].astype(str).to_numpy()
    low = confidence < 0.5
    assert (called[low] == "Unassigned").all()
    assert (called[~low] == np.array(classes)[proba.argmax(1)][~low]).all()
    report = json.loads(result.stdout)
    assert report["values_detected"] == "counts" and report["genes"]["genes_mapped"] == 3000
    assert (tmp_path / "annotated_embedding.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(adata.uns["wensu_annotation"]["genes"])["genes_mapped"] == 3000


def test_log_normalised_input_is_detected_and_gives_the_same_answer(classifier, tmp_path):
    source = load_cut()
    counts = sparse.csr_matrix(source.X, dtype=np.float64)
    totals = np.asarray(counts.sum(1)).ravel()
    lognorm = sparse.diags(1e4 / totals) @ counts
    lognorm.data = np.log1p(lognorm.data)
    path = write_h5ad(tmp_path / "log.h5ad", lognorm.astype(np.float32), source.var_names)
    raw = annotate(classifier, PBMC3K, tmp_path / "raw_out.h5ad", plot=False)
    log = annotate(classifier, path, tmp_path / "log_out.h5ad", plot=False)
    assert raw["values_detected"] == "counts" and log["values_detected"] == "log1p"
    np.testing.assert_allclose(
        proba_of(tmp_path / "log_out.h5ad"), proba_of(tmp_path / "raw_out.h5ad"), atol=1e-4
    )


@pytest.mark.parametrize("layout", ["csc", "dense"])
def test_csc_and_dense_matrices_give_the_csr_answer(classifier, tmp_path, layout):
    source = load_cut()
    X = sparse.csc_matrix(source.X) if layout == "csc" else source.X.toarray()
    path = write_h5ad(tmp_path / f"{layout}.h5ad", X, source.var_names)
    annotate(classifier, PBMC3K, tmp_path / "csr_out.h5ad", plot=False)
    annotate(classifier, path, tmp_path / "other_out.h5ad", plot=False)
    np.testing.assert_allclose(
        proba_of(tmp_path / "other_out.h5ad"), proba_of(tmp_path / "csr_out.h5ad"), atol=1e-6
    )


def test_ensembl_ids_map_through_a_symbol_column(classifier, tmp_path):
    source = load_cut()
    ensembl = [f"ENSG{i:011d}" for i in range(source.n_vars)]
    symbols = {"gene_symbol": list(source.var_names)}
    path = write_h5ad(tmp_path / "ens.h5ad", source.X, ensembl, var=symbols)
    report = annotate(classifier, path, tmp_path / "out.h5ad", plot=False)
    assert report["genes"]["genes_mapped"] == 3000
    chosen = annotate(classifier, path, tmp_path / "o2.h5ad", gene_column="gene_symbol", plot=False)
    assert chosen["genes"]["genes_mapped"] == 3000
    bare = write_h5ad(tmp_path / "bare.h5ad", source.X, ensembl)
    with pytest.raises(AnnotateError, match="Ensembl gene ids .* gene_column"):
        annotate(classifier, bare, tmp_path / "o3.h5ad", plot=False)


def test_unseen_cell_types_are_reported_per_class(classifier, tmp_path):
    # The classifier knows B, CD14 Mono, CD4 T, NK; the cut also holds CD8 T, DC, ...
    report = annotate(classifier, f"{PBMC3K}:cell_type_coarse", tmp_path / "out.h5ad", plot=False)
    known = report["known_labels"]
    assert known["per_class"]["DC"]["seen_in_training"] is False
    assert known["per_class"]["DC"]["recall"] is None
    assert sum(known["per_class"]["DC"]["predicted_as"].values()) == 30
    assert known["per_class"]["B"]["seen_in_training"] is True
    assert known["cells_of_unseen_classes"] == 30 * 3 + 14
    assert 0 <= known["macro_f1"] <= 1


def _bad(tmp_path: Path, name: str, X, genes, **kw) -> Path:
    return write_h5ad(tmp_path / name, X, genes, **kw)


def test_bad_inputs_are_one_line_errors(classifier, tmp_path):
    source = load_cut()
    genes = list(source.var_names)
    dense = source.X.toarray().astype(np.float32)
    cases = {}
    cases["empty"] = (_bad(tmp_path, "empty.h5ad", np.zeros((0, 3000), np.float32), genes), "empty")
    nan = dense.copy()
    nan[0, 0] = np.nan
    cases["nan"] = (_bad(tmp_path, "nan.h5ad", nan, genes), "NaN")
    negative = dense.copy()
    negative[1, 2] = -3
    cases["negative"] = (_bad(tmp_path, "neg.h5ad", negative, genes), "negative values")
    duplicated = genes[:-1] + [genes[0]]
    cases["duplicates"] = (_bad(tmp_path, "dup.h5ad", dense, duplicated), "duplicated gene ids")
    other = [f"NOTAGENE{i}" for i in range(3000)]
    cases["no overlap"] = (_bad(tmp_path, "none.h5ad", dense, other), "only 0 of its 3000 genes")
    for name, (path, message) in cases.items():
        with pytest.raises(AnnotateError, match=message) as caught:
            annotate(classifier, path, tmp_path / f"{name}_out.h5ad", plot=False)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value), name
    fractional = dense.copy()
    fractional[0, :5] = 0.5
    path = _bad(tmp_path, "frac.h5ad", fractional, genes)
    with pytest.raises(AnnotateError, match="values=counts but .* non-integer"):
        annotate(classifier, path, tmp_path / "frac_out.h5ad", values="counts", plot=False)
    with pytest.raises(AnnotateError, match="no label column 'nope'"):
        annotate(classifier, f"{PBMC3K}:nope", tmp_path / "l_out.h5ad", plot=False)


def test_minimum_gene_overlap_is_configurable(classifier, tmp_path):
    source = load_cut()
    few = write_h5ad(tmp_path / "few.h5ad", source.X[:, :50], source.var_names[:50])
    with pytest.raises(AnnotateError, match=r"only 50 of its 50 genes .*minimum 100"):
        annotate(classifier, few, tmp_path / "a.h5ad", plot=False)
    report = annotate(classifier, few, tmp_path / "b.h5ad", min_genes=40, plot=False)
    assert report["genes"]["genes_mapped"] == 50
    # A small share of the panel: the report says how to fine-tune on the file's own genes.
    assert "data.panel_from=[" in report["panel_note"] and "few.h5ad" in report["panel_note"]
    full = annotate(classifier, PBMC3K, tmp_path / "c.h5ad", plot=False)
    assert "panel_note" not in full


def test_checkpoints_of_the_wrong_kind_are_refused(classifier, tmp_path):
    from wensu.checkpoint import CheckpointError, load, save_encoder_checkpoint
    from wensu.model import EncoderConfig, build_encoder

    protein = tmp_path / "protein.ckpt"
    cfg = EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=32)
    save_encoder_checkpoint(build_encoder(cfg), protein)
    with pytest.raises(AnnotateError, match="protein model checkpoint"):
        annotate(protein, PBMC3K, tmp_path / "a.h5ad", plot=False)
    pretrained = tiny_pretrained(tmp_path / "pretrained.ckpt")
    with pytest.raises(AnnotateError, match="without a cell-type head"):
        annotate(pretrained, PBMC3K, tmp_path / "b.h5ad", plot=False)
    with pytest.raises(CheckpointError, match="not a protein encoder"):
        load(classifier)  # and the other way round: protein tools refuse cell checkpoints


def test_cli_errors_exit_2_with_one_line(classifier, tmp_path):
    out = tmp_path / "o.h5ad"
    cases = [
        ([f"checkpoint={classifier}", f"input={tmp_path / 'missing.h5ad'}", f"output={out}"],
         "no such .h5ad file"),
        ([f"checkpoint={classifier}", f"input={KANG}", f"output={KANG}", "overwrite=true"],
         "never modified in place"),
        ([f"checkpoint={tmp_path / 'none.ckpt'}", f"input={KANG}", f"output={out}"],
         "no such checkpoint file"),
        ([f"checkpoint={classifier}", f"input={KANG}"], "missing required option output"),
    ]  # fmt: skip
    for args, message in cases:
        result = _cli(args, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
