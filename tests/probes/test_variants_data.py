"""wensu.probes.variants.data: the real DMS sets (counts per SOURCES.md) and clear input errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

from wensu.probes.variants.data import (
    Substitution,
    VariantDataError,
    load_variant_sets,
    mutated_sequence,
    parse_mutant,
    read_index,
    variants_dir,
)

# Row counts from /work/shared/data/variants/SOURCES.md.
EXPECTED_COUNTS = {
    "BLAT_ECOLX_Stiffler_2015": 4996,
    "BLAT_ECOLX_Firnberg_2014": 4783,
    "BLAT_ECOLX_Jacquier_2013": 989,
    "BLAT_ECOLX_Deng_2012": 4996,
    "KKA2_KLEPN_Melnikov_2014": 4960,
    "AACC1_PSEAI_Dandage_2018": 1801,
    "GFP_AEQVI_Sarkisyan_2016": 1084,
    "UBE4B_MOUSE_Starita_2013": 899,
    "PABP_YEAST_Melamed_2013": 1187,
    "SPG1_STRSG_Olson_2014": 1045,
    "BRCA1_HUMAN_Findlay_2018": 1837,
    "P53_HUMAN_Kotler_2018": 1048,
    "SUMO1_HUMAN_Weile_2017": 1700,
    "CALM1_HUMAN_Weile_2017": 1813,
    "DLG4_RAT_McLaughlin_2012": 1576,
    "YAP1_HUMAN_Araya_2012": 362,
}


@pytest.fixture(scope="module")
def real_sets():
    return load_variant_sets(require_shared("variants"))


def test_reader_on_the_real_sets(real_sets):
    assert {s.name: len(s) for s in real_sets} == EXPECTED_COUNTS
    assert sum(len(s) for s in real_sets) == 35076
    assert len({s.info.protein for s in real_sets}) == 13
    assert sorted(s.name for s in real_sets if s.info.protein == "BLAT_ECOLX") == sorted(
        n for n in EXPECTED_COUNTS if n.startswith("BLAT_ECOLX")
    )
    with open(require_shared("variants/sets.csv"), newline="") as handle:
        lengths = {row["name"]: int(row["seq_len"]) for row in csv.DictReader(handle)}
    for variant_set in real_sets:
        assert variant_set.info.offset == 1
        assert len(variant_set.info.sequence) == lengths[variant_set.name]
        assert all(len(m) == 1 for m in variant_set.mutants)  # single substitutions only
    stiffler = next(s for s in real_sets if s.name == "BLAT_ECOLX_Stiffler_2015")
    assert stiffler.names[0] == "H24C" and stiffler.lines[0] == 2
    assert stiffler.scores[0] == pytest.approx(-0.418259925)
    assert stiffler.info.sequence[23] == "H"  # UniProt numbering, signal peptide included
    assert {s.position for m in stiffler.mutants for s in m} == set(range(24, 287))


def test_both_folder_forms_are_accepted():
    root = require_shared("variants").parent
    assert variants_dir(root) == variants_dir(root / "variants") == root / "variants"
    assert len(read_index(root)) == 16


def test_fast_subset_is_a_fixed_sample(real_sets):
    (first,) = load_variant_sets(require_shared("variants"), ["BLAT_ECOLX_Deng_2012"], 200)
    (again,) = load_variant_sets(require_shared("variants"), ["BLAT_ECOLX_Deng_2012"], 200)
    full = next(s for s in real_sets if s.name == "BLAT_ECOLX_Deng_2012")
    assert len(first) == 200 and first.names == again.names
    assert set(first.names) <= set(full.names)
    assert np.all(np.diff(first.lines) > 0)  # file order kept
    lookup = dict(zip(full.names, full.scores, strict=True))
    assert [lookup[n] for n in first.names] == first.scores.tolist()
    (small,) = load_variant_sets(require_shared("variants"), ["YAP1_HUMAN_Araya_2012"], 10_000)
    assert len(small) == 362


def test_parse_mutant_and_mutated_sequence():
    assert parse_mutant("A42G") == (Substitution("A", 42, "G"),)
    assert parse_mutant(" a1c:L3p ") == (Substitution("A", 1, "C"), Substitution("L", 3, "P"))
    assert mutated_sequence("ACL", parse_mutant("A1C:L3P")) == "CCP"
    assert mutated_sequence("ACL", parse_mutant("A11C"), offset=11) == "CCL"
    for bad, reason in [
        ("A42", "malformed"),
        ("42G", "malformed"),
        ("A4-2G", "malformed"),
        ("A42G;L60P", "malformed"),
        ("", "empty"),
        ("A42X", "not one of the 20"),
        ("A42*", "not one of the 20"),
        ("A42G:A42C", "same position twice"),
    ]:
        with pytest.raises(VariantDataError, match=f"my.csv line 7: .*{reason}"):
            parse_mutant(bad, where="my.csv line 7")


def _write_set(folder: Path, rows: list[str], sequence: str = "MKTAYIAK", count: str = "") -> Path:
    (folder / "sets.csv").write_text(
        "name,file,uniprot_id,offset,wild_type_sequence,n_variants\n"
        f"DEMO_SET,demo.csv,DEMO_HUMAN,1: 1-based,{sequence},{count}\n"
    )
    (folder / "demo.csv").write_text("mutant,score\n" + "\n".join(rows) + "\n")
    return folder


def test_wild_type_mismatch_names_set_line_and_position(tmp_path):
    _write_set(tmp_path, ["K2A,0.5", "T3G,0.1", "A5G,0.2"])
    with pytest.raises(VariantDataError) as error:
        load_variant_sets(tmp_path)
    message = str(error.value)
    assert "set DEMO_SET (demo.csv) line 4" in message
    assert "position 5" in message and "says A" in message and "has Y" in message


def test_other_bad_rows_name_the_line(tmp_path):
    cases = [
        (["K2A,0.5", "K2,0.1"], "line 3: malformed mutant 'K2'"),
        (["K2A,0.5", "T9G,0.1"], "line 3: position 9 of T9G is outside"),
        (["K2A,0.5", "T3G,"], "line 3: score '' is not a finite number"),
        (["K2A,0.5", "T3G,nan"], "line 3: score 'nan' is not a finite number"),
        (["K2A,0.5", "K2A,0.1"], "line 3: mutant K2A already listed on line 2"),
    ]
    for rows, message in cases:
        _write_set(tmp_path, rows)
        with pytest.raises(VariantDataError, match=message.replace("(", r"\(")):
            load_variant_sets(tmp_path)


def test_index_errors(tmp_path):
    _write_set(tmp_path, ["K2A,0.5", "T3G,0.1"], count="5")
    with pytest.raises(VariantDataError, match="2 variants in the file but sets.csv says"):
        load_variant_sets(tmp_path)
    _write_set(tmp_path, ["K2A,0.5"])
    with pytest.raises(VariantDataError, match=r"unknown variant set\(s\) \['NOPE'\]"):
        load_variant_sets(tmp_path, ["NOPE"])
    (tmp_path / "demo.csv").write_text("variant,score\nK2A,1\n")
    with pytest.raises(VariantDataError, match=r"demo.csv: missing column\(s\) \['mutant'\]"):
        load_variant_sets(tmp_path)
    _write_set(tmp_path, ["K2A,0.5"], sequence="MK1A")
    with pytest.raises(VariantDataError, match="sets.csv line 2 .*invalid wild_type_sequence"):
        load_variant_sets(tmp_path)
    (tmp_path / "sets.csv").unlink()
    with pytest.raises(VariantDataError, match="no sets.csv here"):
        load_variant_sets(tmp_path)
