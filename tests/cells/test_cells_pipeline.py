"""The cells pipeline on real shared files (subsets) and on crafted edge cases."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import anndata as ad
import numpy as np
import pytest
from conftest import require_shared
from wensu.preprocessing.cells import GeneVocab, run_cells
from wensu.preprocessing.cells.writer import SplitRouter
from wensu.preprocessing.errors import OutputExistsError

from wensu.data.cells import CellShardDataset
from wensu.data.shards import SPLITS, read_manifest, sha256_file

STIM = "kang2018_ifnb_stim_muscat_806"
IFNB1K = "kang2018_ifnb_seuratdata_ifnb1k_832"
DING = "pbmc_ding2020_celseq2_scmoo_243"


def _inputs(*names):
    return [str(require_shared(f"singlecell/{n}.h5ad")) for n in names]


def _tsv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


@pytest.fixture(scope="module")
def kang_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cells") / "kang"
    summary = run_cells(input=_inputs(STIM, IFNB1K, DING), output=str(out), shard_size_cells=200)
    return out, summary


def test_accounting_and_duplicates(kang_run):
    out, summary = kang_run
    manifest = read_manifest(out)
    counts = manifest["counts"]
    assert counts["read"] == 806 + 832 + 243
    assert (
        counts["read"]
        == counts["written"] + counts["duplicates"] + counts["filtered"] + counts["quarantined"]
    )
    # SOURCES.md: 31 ifnb1k cells are flagged as stim-muscat cells; one more has identical counts.
    rules = Counter(row["rule"] for row in _tsv(out / "duplicates.tsv"))
    assert rules == {"same_cell_in_kang_stim_muscat": 31, "same_counts": 1}
    assert counts["duplicates"] == 32
    # The ctrl-lane flags point at a dataset that is not pooled here: those cells stay.
    assert manifest["kind"] == "cells" and not summary["already_complete"]
    assert sum(manifest["splits"][s]["records"] for s in SPLITS) == counts["written"]
    for split in SPLITS:
        for shard in manifest["splits"][split]["shards"]:
            assert sha256_file(out / shard["path"]) == shard["sha256"]
    stats = json.loads((out / "stats.json").read_text())
    for name, per_file in stats["datasets"].items():
        assert per_file["read"] == sum(
            per_file[k] for k in ("written", "duplicates", "filtered", "quarantined")
        ), name
    assert stats["datasets"][DING]["genes"]["measured"] == 2000
    vocab = GeneVocab.load(out / "vocab.json")
    assert manifest["vocab_size"] == len(vocab) and list(vocab.genes) == sorted(vocab.genes)
    panels = json.loads((out / "panels.json").read_text())
    assert len(panels[DING]) == stats["datasets"][DING]["genes"]["in_vocab"]
    assert not (out / ".work").exists()


def test_tokens_match_hand_computation(kang_run):
    out, _ = kang_run
    ds = CellShardDataset(out, "train")
    vocab = ds.vocab
    adata = ad.read_h5ad(require_shared(f"singlecell/{DING}.h5ad"))
    datasets = ds.column("dataset")
    for index in np.flatnonzero(datasets == DING)[:5]:
        cell = ds[int(index)]
        row = adata[cell["id"]].X.toarray().ravel().astype(float)
        cp10k = row / row.sum() * 1e4
        expected = {}
        for j in np.flatnonzero(row):
            symbol = adata.var_names[j]
            if symbol in vocab:
                expected[vocab.id_of(symbol)] = 1 + min(int(np.floor(np.log2(1 + cp10k[j]))), 7)
        assert cell["genes"].tolist() == sorted(expected)
        assert cell["bins"].tolist() == [expected[g] for g in sorted(expected)]
        assert cell["labels"]["cell_type"] == adata.obs.loc[cell["id"], "cell_type"]


def test_split_is_a_hash_of_the_cell_key(kang_run, tmp_path):
    out, _ = kang_run
    other = tmp_path / "other"
    run_cells(
        input=_inputs(STIM, IFNB1K, DING), output=str(other), shard_size_cells=77, chunk_cells=50
    )
    router = SplitRouter({"train": 0.9, "valid": 0.05, "test": 0.05}, 0)
    seen = {}
    for split in SPLITS:
        a = CellShardDataset(out, split)
        b = CellShardDataset(other, split)
        keys = [f"{d}/{c}" for d, c in zip(a.column("dataset"), a.column("ids"), strict=True)]
        assert keys == [
            f"{d}/{c}" for d, c in zip(b.column("dataset"), b.column("ids"), strict=True)
        ]
        assert all(router.split_of_key(k) == split for k in keys)
        seen[split] = len(keys)
    digest = hashlib.blake2b(
        f"{DING}/celseq2_cell000".encode() + (0).to_bytes(8, "little"), digest_size=8
    )
    point = int.from_bytes(digest.digest(), "big") / 2**64
    expected = "train" if point < 0.9 else "valid" if point < 0.95 else "test"
    assert router.split_of_key(f"{DING}/celseq2_cell000") == expected
    assert 0.85 < seen["train"] / sum(seen.values()) < 0.95


def test_holdout_dataset_and_donor(tmp_path):
    out = tmp_path / "held"
    run_cells(
        input=_inputs(STIM, DING),
        output=str(out),
        holdout={"datasets": [DING], "donors": ["107"], "split": "test"},
    )
    test = CellShardDataset(out, "test")
    train = CellShardDataset(out, "train")
    assert (
        Counter(test.column("dataset"))[DING]
        == 243 - json.loads((out / "stats.json").read_text())["datasets"][DING]["filtered"]
    )
    assert Counter(test.column("donor"))["107"] == 306
    assert DING not in set(train.column("dataset")) and "107" not in set(train.column("donor"))


def test_rerun_is_a_no_op_and_other_settings_are_refused(kang_run):
    out, _ = kang_run
    again = run_cells(input=_inputs(STIM, IFNB1K, DING), output=str(out), shard_size_cells=200)
    assert again["already_complete"] and again["counts"] == read_manifest(out)["counts"]
    with pytest.raises(OutputExistsError, match="other inputs or settings"):
        run_cells(input=_inputs(DING), output=str(out))


def test_given_vocab_drops_and_reports_genes(tmp_path):
    vocab = tmp_path / "given.json"
    GeneVocab(["LYZ", "CD74", "HLA-DRA", "NOT_A_GENE"]).save(vocab)
    out = tmp_path / "given"
    summary = run_cells(
        input=_inputs(DING), output=str(out), vocab=str(vocab), **{"filters": {"min_genes": 1}}
    )
    assert GeneVocab.load(out / "vocab.json") == GeneVocab.load(vocab)
    dropped = _tsv(out / "genes_dropped.tsv")
    assert len(dropped) == 2000 - 3 and {r["reason"] for r in dropped} == {"not_in_vocab"}
    stats = json.loads((out / "stats.json").read_text())["datasets"][DING]
    assert (
        stats["genes"]["outside_vocab"] == 1997
        and 0 < stats["genes"]["outside_vocab_umi_fraction"] < 1
    )
    no_vocab = stats["filtered_by_reason"].get("no_vocab_genes", 0)
    assert (
        summary["counts"]["written"]
        + no_vocab
        + stats["filtered_by_reason"].get("too_few_genes", 0)
        == 243
    )
    ds = CellShardDataset(out, "train")
    assert set(np.concatenate([ds[i]["genes"] for i in range(len(ds))])) <= {5, 6, 7}


def test_rank_order_with_zeros(tmp_path):
    out = tmp_path / "rank"
    run_cells(
        input=_inputs(DING),
        output=str(out),
        binning={"token_order": "rank", "include_zeros": True, "max_genes": 600},
    )
    stats = json.loads((out / "stats.json").read_text())
    medians = stats["gene_medians"]
    ds = CellShardDataset(out, "train")
    cell = ds[0]
    assert len(cell["genes"]) == 600
    expressed = cell["bins"] > 0
    # Expressed genes first, then measured zeros; never an expressed gene after a zero.
    assert not np.any(np.diff(expressed.astype(int)) > 0)
    assert set(cell["genes"]) <= set(json.loads((out / "panels.json").read_text())[DING])
    assert len(medians) == len(ds.vocab.genes)
    # Expressed genes are ordered by CP10k / corpus median, descending (Geneformer).
    adata = ad.read_h5ad(require_shared(f"singlecell/{DING}.h5ad"))
    row = adata[cell["id"]].X.toarray().ravel().astype(float)
    cp10k = dict(zip(adata.var_names, row / row.sum() * 1e4, strict=True))
    symbols = ds.vocab.symbols(cell["genes"][expressed])
    scores = [cp10k[s] / medians[s] for s in symbols]
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))
    assert all(cp10k[s] > 0 for s in symbols)


def test_crafted_edge_cases_are_counted(tmp_path):
    from test_cells_h5ad import make_h5ad

    genes = [f"G{i}" for i in range(6)]
    counts = np.array(
        [
            [0, 0, 0, 0, 0, 0],  # zero counts
            [3, 0, 0, 0, 0, 0],  # 1 gene < min_genes=2
            [1, 2, 3, 4, 5, 6],
            [2, 2, 0, 1, 0, 9],
        ]
    )
    labelled = make_h5ad(tmp_path / "labelled.h5ad", counts, genes)
    floats = make_h5ad(
        tmp_path / "floats.h5ad",
        np.array([[1.5, 2.0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]),
        genes,
        obs={"batch": ["a", "b"]},
    )
    out = tmp_path / "crafted"
    summary = run_cells(
        input=[str(labelled), str(floats)],
        output=str(out),
        on_non_integer="quarantine",
        filters={"min_genes": 2, "min_cells": 1},
    )
    counts_out = summary["counts"]
    assert counts_out["read"] == 6 and counts_out["written"] == 3
    assert counts_out["filtered_by_reason"] == {"zero_counts": 1, "too_few_genes": 1}
    assert counts_out["quarantined_by_reason"] == {"non_integer_values": 1}
    assert _tsv(out / "quarantine.tsv") == [
        {"dataset": "floats", "cell_id": "cell0", "reason": "non_integer_values"}
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert any("floats.h5ad: has no label column" in w for w in stats["warnings"])
    labels = Counter()
    for split in SPLITS:
        labels.update(CellShardDataset(out, split).column("cell_type_coarse"))
    assert labels == {"B": 2, "": 1}
