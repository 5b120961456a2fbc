"""Deterministic splits (1 vs 2 workers, rerun), hash reference, pieces stay together, MMseqs2
cluster-aware splits, and the real-data accounting of the 15 proteomes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import defaultdict

import pytest
from conftest import require_shared
from helpers_preprocess import read_records
from wensu.preprocessing import run_preprocess
from wensu.preprocessing.split import SplitAssigner, cut_long

from wensu.data.fasta import read_fasta

UNIPARC = "sequences/uniparc/uniparc_UPI0000000001-UPI0000000308.fasta"
MITO = "sequences/prokka_sprot/prokka_Mitochondria_sprot.fasta.gz"


def _manifest(output) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("created")
    return manifest


def _reference_split(sequence: bytes, seed: int = 0) -> str:
    """Independent re-statement of the rule: BLAKE2b-64(BLAKE2b-128(seq) + seed) / 2**64."""
    digest = hashlib.blake2b(sequence, digest_size=16).digest()
    point = hashlib.blake2b(digest + seed.to_bytes(8, "little", signed=True), digest_size=8)
    fraction = int.from_bytes(point.digest(), "big") / 2**64
    return "train" if fraction < 0.9 else "valid" if fraction < 0.95 else "test"


def test_cut_long_pieces_are_near_equal_and_cover_the_sequence():
    sequence = bytes(range(65, 91)) * 96 + b"ACDE"  # 2500 residues
    pieces = cut_long("P1", sequence, 1000, "split")
    assert [p[0] for p in pieces] == ["P1/1-834", "P1/835-1667", "P1/1668-2500"]
    assert b"".join(p[1] for p in pieces) == sequence
    assert cut_long("P1", sequence, 1000, "crop") == [("P1", sequence[:1000])]
    assert cut_long("P1", sequence, None, "split") == [("P1", sequence)]


def test_split_assigner_fractions_and_seed():
    assign = SplitAssigner({"train": 0.8, "valid": 0.1, "test": 0.1}, seed=0)
    keys = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(20000)]
    counts = defaultdict(int)
    for key in keys:
        counts[assign(key)] += 1
    assert abs(counts["train"] / 20000 - 0.8) < 0.015
    assert abs(counts["test"] / 20000 - 0.1) < 0.01
    reseeded = SplitAssigner({"train": 0.8, "valid": 0.1, "test": 0.1}, seed=1)
    assert [assign(k) for k in keys[:200]] != [reseeded(k) for k in keys[:200]]
    only_train = SplitAssigner({"train": 1.0, "valid": 0.0, "test": 0.0})
    assert {only_train(k) for k in keys[:500]} == {"train"}


@pytest.mark.parametrize(
    "fractions",
    [(0.8, 0.1, 0.1), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.5, 0.0), (0.0, 1.0, 0.0)],
)
def test_split_assigner_indices_match_one_by_one(fractions):
    """The batched assignment used by the pipeline gives the per-key answer."""
    assign = SplitAssigner(dict(zip(("train", "valid", "test"), fractions, strict=True)), seed=3)
    keys = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(3000)]
    names = ("train", "valid", "test")
    assert [names[i] for i in assign.indices(keys).tolist()] == [assign(k) for k in keys]
    assert assign.indices([]).tolist() == []


@pytest.mark.shared_data
def test_same_output_with_1_and_2_workers_and_across_runs(tmp_path):
    inputs = [str(require_shared(UNIPARC)), str(require_shared(MITO))]
    settings = {"shard_size_records": 200, "chunk_bytes": 20000, "max_length": 400,
                "progress": False}  # fmt: skip
    outputs = []
    for name, workers in (("w1", 1), ("w2", 2), ("w2again", 2)):
        output = tmp_path / name
        run_preprocess(input=inputs, output=str(output), num_workers=workers, **settings)
        outputs.append(output)
    first = _manifest(outputs[0])
    assert len(first["inputs"]) == 2 and first["counts"]["read"] == 776 + 1273
    for other in outputs[1:]:
        assert _manifest(other) == first
        for name in ("quarantine.tsv", "duplicates.tsv", "stats.json"):
            assert (other / name).read_bytes() == (outputs[0] / name).read_bytes()
        for split in first["splits"].values():
            for shard in split["shards"]:
                path = shard["path"]
                assert (other / path).read_bytes() == (outputs[0] / path).read_bytes()

    records = read_records(outputs[0])
    originals = {r.id: r.sequence for p in inputs for r in read_fasta(p)}
    splits_of_protein = defaultdict(set)
    for record_id, record in records.items():
        base = record_id.split("/")[0]
        splits_of_protein[base].add(record["split"])
        assert record["split"] == _reference_split(originals[base])
        assert len(record["sequence"]) <= 400
    assert all(len(s) == 1 for s in splits_of_protein.values())  # pieces stay together
    assert any("/" in rid for rid in records)  # the 1906-residue UniParc entry was split


@pytest.mark.shared_data
def test_fifteen_proteomes_accounting(tmp_path):
    """SOURCES.md: 82,814 proteome records, 78,810 unique sequences (first occurrence kept)."""
    folder = require_shared("sequences/uniprot_proteomes")
    summary = run_preprocess(
        input=[str(folder)], output=str(tmp_path), num_workers=2, shard_size_records=100_000,
        progress=False,
    )  # fmt: skip
    counts = summary["counts"]
    assert (counts["read"], counts["written"], counts["duplicates"]) == (82_814, 78_810, 4_004)
    assert counts["quarantined"] == counts["filtered"] == 0
    unique: dict[bytes, str] = {}
    for path in sorted(folder.glob("*.fasta.gz")):
        for record in read_fasta(path):
            unique.setdefault(record.sequence, record.id)
    kept = set(unique.values())
    records = read_records(tmp_path)
    assert set(records) == kept
    stats = json.loads((tmp_path / "stats.json").read_text())["written"]
    assert stats["residues"] == sum(map(len, unique))
    assert stats["length"]["max"] == max(map(len, unique)) == 10_549
    assert stats["composition"]["U"]["count"] == sum(s.count(b"U") for s in unique)


def _mmseqs_available() -> bool:
    if shutil.which("mmseqs"):
        return True
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("MMseqs2 (mmseqs) is required under CI: apt-get install mmseqs2")
    pytest.skip("mmseqs not installed")


@pytest.mark.shared_data
def test_cluster_split_keeps_each_cluster_in_one_split(tmp_path):
    _mmseqs_available()
    inputs = [str(require_shared(UNIPARC)), str(require_shared(MITO))]
    settings = {"cluster": {"enabled": True, "min_seq_id": 0.3, "coverage": 0.5},
                "split": {"train": 0.6, "valid": 0.2, "test": 0.2}, "progress": False}  # fmt: skip
    run_preprocess(input=inputs, output=str(tmp_path / "a"), num_workers=1, **settings)
    settings["cluster"]["identity_report"] = False
    run_preprocess(input=inputs, output=str(tmp_path / "b"), num_workers=2, **settings)
    assert _manifest(tmp_path / "a")["splits"] == _manifest(tmp_path / "b")["splits"]
    records = read_records(tmp_path / "a")
    split_of_cluster = defaultdict(set)
    members = defaultdict(set)
    for record_id, record in records.items():
        split_of_cluster[record["cluster"]].add(record["split"])
        members[record["cluster"]].add(record_id)
    assert all(len(s) == 1 for s in split_of_cluster.values())
    assert any(len(m) > 1 for m in members.values())
    for cluster, ids in members.items():
        assert cluster in ids  # the representative is a member, in the same split

    # Reference: MMseqs2 run directly on the same sequences gives the same partition.
    fasta = tmp_path / "direct.fasta"
    in_order = [r for path in inputs for r in read_fasta(path) if r.id in records]
    fasta.write_bytes(b"".join(b">%s\n%s\n" % (r.id.encode(), r.sequence) for r in in_order))
    subprocess.run(["mmseqs", "easy-linclust", str(fasta), str(tmp_path / "direct"),
                    str(tmp_path / "tmp"), "--min-seq-id", "0.3", "-c", "0.5", "-v", "1"],
                   check=True)  # fmt: skip
    direct = defaultdict(set)
    for line in (tmp_path / "direct_cluster.tsv").read_text().splitlines():
        rep, member = line.split("\t")
        direct[rep].add(member)
    assert sorted(map(sorted, direct.values())) == sorted(map(sorted, members.values()))

    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    report = stats["clustering"]["test_vs_train"]
    assert stats["clustering"]["clusters"] == len(members)
    assert report["max_identity"] == stats["max_test_train_identity"]
    assert 0 < report["max_identity"] <= report["max_identity_any_alignment"] <= 1.0
    assert report["queries"] == sum(1 for r in records.values() if r["split"] == "test")
    assert not (tmp_path / "a" / ".work").exists()
