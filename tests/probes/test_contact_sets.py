"""Contact-set loaders: real sets and a crafted folder where bad structures are counted."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
from conftest import require_shared

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.contacts.data import _pdb_entry_jobs, load_contact_set


@pytest.mark.parametrize("name, count", [("cath103", 103), ("ts50", 50)])
def test_backbone_sets_load_completely(name, count):
    loaded = load_contact_set(name, require_shared("structure"), show_progress=False)
    assert len(loaded.structures) == count and not loaded.skipped
    first = loaded.structures[0]
    assert first.atom.startswith("virtual CB")
    assert len(first.sequence) == len(first.coords)


def test_ts50_observed_everywhere_and_cath_has_11_missing_atoms():
    ts50 = load_contact_set("ts50", require_shared("structure"), show_progress=False)
    assert all(s.n_observed == len(s.sequence) for s in ts50.structures)
    cath = load_contact_set("cath103", require_shared("structure"), show_progress=False)
    missing = sum(len(s.sequence) - s.n_observed for s in cath.structures)
    assert 0 < missing <= 11  # residues with a missing backbone atom (SOURCES.md: 11)


def test_pdb_entries_drop_second_of_near_duplicate_pairs():
    jobs = list(_pdb_entry_jobs(require_shared("structure/pdb_entries"), drop_similar=True))
    names = [label for _, _, label in jobs]
    assert len(names) == 94  # 101 entries, 7 second members of near-duplicate pairs removed
    assert "1ACJ_A" in names and not any(n.startswith("1EVE") for n in names)
    assert len(list(_pdb_entry_jobs(require_shared("structure/pdb_entries"), False))) == 101


def test_smallest_files_first_with_a_limit():
    loaded = load_contact_set(
        "pdb_entries", require_shared("structure"), limit=3, select="smallest", show_progress=False
    )
    sizes = [f.stat().st_size for f in loaded.files]
    assert len(loaded.structures) == 3 and sizes == sorted(sizes)


def test_crafted_folder_counts_bad_structures(tmp_path):
    source = require_shared("structure/contact_sets/kortemme_pfam40/files")
    files = tmp_path / "contact_sets" / "kortemme_pfam40" / "files"
    files.mkdir(parents=True)
    good = sorted(source.glob("*.pdb.gz"))[:2]
    for path in good:
        shutil.copy(path, files / path.name)
    (files / "PF00000_JUNK_A.pdb.gz").write_bytes(gzip.compress(b"not a structure\n"))
    (files / "PF00001_CUTX_A.pdb.gz").write_bytes(gzip.compress(b"ATOM" * 1000)[:30])
    text = gzip.open(good[0], "rt").read()
    (files / "PF00002_MISS_B.pdb.gz").write_bytes(gzip.compress(text.encode()))  # no chain B
    loaded = load_contact_set("kortemme40", tmp_path, show_progress=False)
    assert len(loaded.structures) == 2
    assert dict(loaded.skipped) == {"not_a_structure": 1, "unreadable": 1, "chain_missing": 1}
    assert len(loaded.errors) == 3 and all("PF0000" in e for e in loaded.errors)


def test_malformed_backbone_records_are_counted(tmp_path):
    folder = tmp_path / "contact_sets" / "ts50_gvp"
    folder.mkdir(parents=True)
    records = [
        {
            "name": "ok",
            "seq": "AG",
            "coords": [[[1.458, 0, 0], [0, 0, 0], [-0.5, 1.4, 0], None]] * 2,
        },
        {"name": "no_coords", "seq": "AG"},
        {"name": "short", "seq": "AGA", "coords": [[[0, 0, 0]] * 4]},
    ]
    with gzip.open(folder / "ts50.json.gz", "wt") as handle:
        json.dump(records, handle)
    loaded = load_contact_set("ts50", tmp_path, show_progress=False)
    assert [s.name for s in loaded.structures] == ["ok"]
    assert dict(loaded.skipped) == {"malformed_record": 1, "sequence_mismatch": 1}


def test_unknown_or_missing_sets_raise(tmp_path):
    with pytest.raises(ProbeDataError, match="unknown contact set 'nope'"):
        load_contact_set("nope", tmp_path)
    with pytest.raises(ProbeDataError, match="contact set 'ts50' not found"):
        load_contact_set("ts50", tmp_path)
