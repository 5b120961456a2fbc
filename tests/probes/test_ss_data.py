"""Secondary-structure readers on the real files (counts from structure/SOURCES.md) and on
crafted bad inputs; train/test overlap removal."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import require_shared

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.common.overlap import overlapping_mask
from wensu.probes.ss.data import (
    read_cullpdb_csv,
    read_dnss2,
    read_flip_ss,
    read_netsurfp_csv,
)

SS = "structure/secondary_structure"


@pytest.mark.parametrize(
    "name, records, unique, lengths, residues, unresolved",
    [
        ("CB513", 511, 432, (20, 238, 874), 144_011, 3_525),
        ("TS115", 115, 115, (43, 233, 1_111), 29_704, 2_203),
        ("CASP12", 20, 20, (76, 237, 1_494), 6_801, 797),
    ],
)
def test_netsurfp_counts_match_sources(name, records, unique, lengths, residues, unresolved):
    rows = read_netsurfp_csv(require_shared(f"{SS}/netsurfp2_prottrans/{name}_HHblits.csv.gz"))
    sizes = [len(r.sequence) for r in rows]
    assert len(rows) == records
    assert len({r.sequence for r in rows}) == unique
    assert (min(sizes), int(np.median(sizes)), max(sizes)) == lengths
    assert sum(sizes) == residues
    assert rows[0].id == f"{name}_row1"
    assert all(len(r.ss3) == len(r.ss8) == len(r.sequence) == len(r.mask) for r in rows)
    if name != "CB513":  # no cb513_mask exclusions: the mask is exactly disorder == 1.0
        assert sum(int((~r.mask).sum()) for r in rows) == unresolved


def test_cb513_mask_combines_disorder_and_cb513_mask():
    path = require_shared(f"{SS}/netsurfp2_prottrans/CB513_HHblits.csv.gz")
    rows = read_netsurfp_csv(path)
    with gzip.open(path, "rt") as handle:
        handle.readline()
        fields = handle.readline().split(",")
    disorder = np.array(fields[3].split(), dtype=float)
    cb513 = np.array(fields[4].split(), dtype=float)
    np.testing.assert_array_equal(rows[0].mask, (disorder == 1.0) & (cb513 == 1.0))
    # SOURCES.md: 3,525 unresolved and 60,020 outside the CB513 fragment (they may coincide)
    excluded = sum(int((~r.mask).sum()) for r in rows)
    assert 60_020 <= excluded <= 60_020 + 3_525
    labels = rows[0].labels(8)
    assert (labels[~rows[0].mask] == -100).all() and (labels[rows[0].mask] >= 0).all()


def test_flip_splits_match_sources():
    splits = read_flip_ss(require_shared(f"{SS}/flip_prott5/secondary_structure_splits.zip"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 9_712, "valid": 1_080, "test": 364}
    train = splits["train"]
    assert [min(len(r.sequence) for r in train), max(len(r.sequence) for r in train)] == [20, 1_632]
    first = next(r for r in train if r.id == "1es5-A")
    assert first.ss8 is None and first.ss3.startswith("CCCCCCCCCEEEEEE")
    assert not first.mask[0] and not first.mask[1] and first.mask[2]  # mask.fasta "0011..."


def test_cullpdb_maps_coil_and_counts():
    rows = read_cullpdb_csv(
        require_shared(f"{SS}/icml2014_cullpdb_kaggle_mirror/cullpdb6133filtered_train.csv.gz")
    )
    assert len(rows) == 5_534
    assert len({r.sequence for r in rows}) == 5_364
    assert rows[0].id == "row0" and rows[0].mask.all()
    assert "L" not in "".join(r.ss8 for r in rows[:50])
    # 8 -> 3 state consistency on the real labels: H,G,I -> H; E,B -> E; the rest -> C
    eight, three = rows[0].ss8, rows[0].ss3
    mapping = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}
    assert "".join(mapping[c] for c in eight) == three


@pytest.mark.parametrize(
    "name, targets, lengths", [("CASP11", 85, (37, 629)), ("CASP12", 40, (62, 599))]
)
def test_dnss2_counts(name, targets, lengths):
    rows = read_dnss2(require_shared(f"{SS}/dnss2_casp/{name}"))
    assert len(rows) == targets
    sizes = [len(r.sequence) for r in rows]
    assert (min(sizes), max(sizes)) == lengths
    assert "I" not in "".join(r.ss8 for r in rows)


def _write_csv(path, line):
    path.write_text("input, dssp3, dssp8, disorder, cb513_mask\n" + line + "\n")
    return path


def test_netsurfp_length_mismatch_names_the_row(tmp_path):
    good = "M K V,C H H,C H H,1.0 1.0 1.0,1.0 1.0 1.0"
    bad = "M K V,C H,C H H,1.0 1.0 1.0,1.0 1.0 1.0"
    path = tmp_path / "bad.csv"
    path.write_text(f"input, dssp3, dssp8, disorder, cb513_mask\n{good}\n{bad}\n")
    with pytest.raises(
        ProbeDataError, match=r"bad\.csv data row 2: label/sequence length mismatch"
    ):
        read_netsurfp_csv(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("M K J,C H H,C H H,1.0 1.0 1.0,1.0 1.0 1.0", "outside the protein alphabet"),
        ("M K V,C Q H,C H H,1.0 1.0 1.0,1.0 1.0 1.0", "dssp3 has labels 'Q'"),
        ("M K V,C H H,C H H,1.0 x 1.0,1.0 1.0 1.0", "disorder holds a non-numeric token"),
        ("M K V,C H H", "2 fields, header has 5"),
    ],
)
def test_netsurfp_bad_rows(tmp_path, line, message):
    with pytest.raises(ProbeDataError, match=message):
        read_netsurfp_csv(_write_csv(tmp_path / "x.csv", line))


def test_cullpdb_length_mismatch(tmp_path):
    path = tmp_path / "cull.csv"
    path.write_text(",seq,sst8,sst3,seq_len\n0,MKV,LHH,CHH,3\n1,MKVA,LHH,CHH,4\n")
    with pytest.raises(ProbeDataError, match=r"cull\.csv data row 2: .*mismatch"):
        read_cullpdb_csv(path)


def test_overlap_removal_matches_overlaps_tsv():
    """SOURCES.md: CB513 & FLIP-train 1 exact + 1 substring, TS115 & FLIP-train 1 exact."""
    splits = read_flip_ss(require_shared(f"{SS}/flip_prott5/secondary_structure_splits.zip"))
    tests = []
    for name in ("CB513", "TS115"):
        tests += read_netsurfp_csv(
            require_shared(f"{SS}/netsurfp2_prottrans/{name}_HHblits.csv.gz")
        )
    flags, report = overlapping_mask(
        [r.sequence for r in splits["train"]], [r.sequence for r in tests]
    )
    assert (report.exact, report.substring) == (2, 1)
    assert sorted(r.id for r, f in zip(splits["train"], flags, strict=True) if f) == [
        "1wfb-A",
        "4mt2-A",
        "5jen-C",
    ]


def test_overlap_rules_on_crafted_sequences():
    test = ["MKV" * 20, "CC" + "A" * 40 + "DD", "QW" * 30]
    train = ["A" * 40, "mkv" * 20, "XXXX", "QW" * 20, "A" * 20, "QW" * 40]
    flags, report = overlapping_mask(train, test)
    # inside a test chain; exact (case-insensitive); unrelated; inside; shorter than 30; contains
    assert flags == [True, True, False, True, False, True]
    assert (report.exact, report.substring) == (1, 3)
