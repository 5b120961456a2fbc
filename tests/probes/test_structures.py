"""Bio.PDB parsing to contact maps: real entries checked against the independently derived
(gemmi) backbone file, and crafted bad files that must become per-structure errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import require_shared

from wensu.probes.common.errors import StructureError
from wensu.probes.common.structures import (
    backbone_to_structure,
    contact_map,
    parse_structure,
    virtual_cb,
)

ENTRIES = "structure/pdb_entries"


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    path = require_shared(f"{ENTRIES}/rep_chain_backbone.json.gz")
    with gzip.open(path, "rt") as handle:
        return {entry["pdb_id"]: entry for entry in json.load(handle)}


def _reference_coords(entry: dict) -> np.ndarray:
    """CB (CA for Gly) from the gemmi-derived file; NaN where missing."""
    coords = np.full((len(entry["seq"]), 3), np.nan)
    for i, atoms in enumerate(entry["coords"]):
        if atoms is None:
            continue
        if atoms[4] is not None:
            coords[i] = atoms[4]
        elif entry["seq"][i] == "G" and atoms[1] is not None:
            coords[i] = atoms[1]
    return coords


@pytest.mark.parametrize(
    "pdb_id, file, chain",
    [
        ("1A8O", "1A8O.cif.gz", "A"),  # selenomethionine (MSE) -> M
        ("1VFY", "1VFY.pdb.gz", "A"),  # PDB format, 6 unobserved SEQRES residues
        ("1D66", "1D66.pdb.gz", "A"),  # 9 unobserved
        ("1SFI", "1SFI.cif.gz", "A"),  # insertion codes 184A, 188A, 221A
        ("1LCD", "1LCD.cif.gz", "A"),  # solution NMR, 3 models: the first is used
        ("2OFG", "2OFG.cif.gz", "X"),  # NMR, 106 of 111 observed
    ],
)
def test_real_entries_match_derived_backbone(reference, pdb_id, file, chain):
    structure = parse_structure(require_shared(f"{ENTRIES}/files/{file}"), chain=chain)
    entry = reference[pdb_id]
    assert len(structure.sequence) == len(entry["seq"])
    for ours, theirs in zip(structure.sequence, entry["seq"], strict=True):
        assert ours == theirs or theirs == "X"  # gemmi kept X for modified residues
    if pdb_id == "1A8O":
        assert structure.sequence[0] == "M" and entry["seq"][0] == "X"
    expected = _reference_coords(entry)
    ours_seen = np.isfinite(structure.coords).all(1)
    theirs_seen = np.isfinite(expected).all(1)
    # ours may add a virtual CB where a non-Gly residue lacks its CB; never lose a residue
    assert (ours_seen | ~theirs_seen).all()
    both = ours_seen & theirs_seen
    np.testing.assert_allclose(structure.coords[both], expected[both], atol=1e-3)
    ours_map, ours_valid = contact_map(structure.coords)
    theirs_map, theirs_valid = contact_map(expected)
    valid = ours_valid & theirs_valid
    assert (ours_map[valid] == theirs_map[valid]).all()


def test_contact_map_by_hand():
    coords = np.array([[0, 0, 0], [7.9, 0, 0], [16, 0, 0], [np.nan, np.nan, np.nan]])
    contacts, valid = contact_map(coords)
    assert contacts[0, 1] and contacts[1, 0] and not contacts[0, 2] and contacts[0, 0]
    assert not valid[3].any() and not valid[:, 3].any() and valid[:3, :3].all()


def test_virtual_cb_is_close_to_real_cb():
    path = require_shared(f"{ENTRIES}/files/1AKU.pdb.gz")
    from Bio.PDB import PDBParser

    with gzip.open(path, "rt") as handle:
        chain = PDBParser(QUIET=True).get_structure("x", handle)[0]["A"]
    errors = [
        np.linalg.norm(virtual_cb(r["N"].coord, r["CA"].coord, r["C"].coord) - r["CB"].coord)
        for r in chain
        if all(a in r for a in ("N", "CA", "C", "CB"))
    ]
    assert len(errors) > 100 and np.median(errors) < 0.2 and max(errors) < 0.5


def test_backbone_record_uses_virtual_cb_and_ca_for_glycine():
    n, ca, c = np.array([1.458, 0, 0]), np.zeros(3), np.array([-0.551, 1.42, 0])
    structure = backbone_to_structure("x", "AG", [[n, ca, c, c], [n + 5, ca + 5, c + 5, None]], "t")
    np.testing.assert_allclose(structure.coords[0], virtual_cb(n, ca, c))
    np.testing.assert_allclose(structure.coords[1], ca + 5)
    assert np.linalg.norm(structure.coords[0] - ca) == pytest.approx(1.52, abs=0.05)
    with pytest.raises(StructureError, match="sequence_mismatch"):
        backbone_to_structure("x", "AGA", [[n, ca, c, c]], "t")


# --- crafted bad files, derived from a real entry --------------------------------------------


@pytest.fixture(scope="module")
def aku_text() -> str:
    with gzip.open(require_shared(f"{ENTRIES}/files/1AKU.pdb.gz"), "rt") as handle:
        return handle.read()


def _atoms(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ATOM")]


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def _reason(path, chain=None) -> str:
    with pytest.raises(StructureError) as caught:
        parse_structure(path, chain=chain)
    assert str(path) in str(caught.value)
    return caught.value.reason


def test_truncated_files(tmp_path, aku_text):
    headed = _write(tmp_path, "cut.pdb", aku_text[: len(aku_text) // 2])
    assert _reason(headed) == "truncated"  # has HEADER but no END
    atoms = _atoms(aku_text)
    mid_line = "\n".join(atoms[:50]) + "\n" + atoms[50][:40]
    assert _reason(_write(tmp_path, "midline.pdb", mid_line)) == "truncated"
    raw = gzip.compress(aku_text.encode())
    cut_gz = tmp_path / "cut.pdb.gz"
    cut_gz.write_bytes(raw[: len(raw) // 2])
    assert _reason(cut_gz) == "unreadable"
    cif = gzip.open(require_shared(f"{ENTRIES}/files/1A7G.cif.gz"), "rt").read()
    assert _reason(_write(tmp_path, "cut.cif", cif[: len(cif) * 2 // 3])) in (
        "parse_error",
        "truncated",
    )


def test_not_a_structure(tmp_path):
    assert (
        _reason(_write(tmp_path, "junk.pdb", "hello, this is not a PDB file\n"))
        == "not_a_structure"
    )
    binary = tmp_path / "binary.pdb"
    binary.write_bytes(bytes(range(256)) * 4)
    assert _reason(binary) == "not_a_structure"


def test_chain_problems(tmp_path, aku_text):
    path = _write(tmp_path, "1aku.pdb", aku_text)
    assert _reason(path, chain="Z") == "chain_missing"
    seqres_b = "SEQRES   1 B    3  ALA GLY ALA\n"
    assert _reason(_write(tmp_path, "b.pdb", seqres_b + aku_text), chain="B") == "empty_chain"
    dna = [
        "ATOM      1  P    DA B   1       0.000   0.000   0.000  1.00  0.00           P",
        "ATOM      2  C1'  DA B   1       1.000   0.000   0.000  1.00  0.00           C",
        "ATOM      3  P    DT B   2       5.000   0.000   0.000  1.00  0.00           P",
    ]
    assert (
        _reason(_write(tmp_path, "dna.pdb", "\n".join(dna) + "\nEND\n"), chain="B") == "not_protein"
    )
    assert _reason(_write(tmp_path, "dna2.pdb", "\n".join(dna) + "\nEND\n")) == "not_protein"


def test_no_contact_atoms(tmp_path, aku_text):
    kept = [a for a in _atoms(aku_text) if a[12:16].strip() in ("N", "O")]
    assert (
        _reason(_write(tmp_path, "noca.pdb", "\n".join(kept) + "\nEND\n"), chain="A")
        == "no_coordinates"
    )


def test_seqres_mismatch(tmp_path, aku_text):
    other = [line for line in aku_text.splitlines() if not line.startswith("SEQRES")]
    fake = ["SEQRES   1 A  147  " + " ".join(["TRP"] * 13)] * 12
    text = "\n".join(fake + other) + "\n"
    assert _reason(_write(tmp_path, "mismatch.pdb", text), chain="A") == "sequence_mismatch"


def test_multi_model_uses_the_first(tmp_path, aku_text):
    atoms = _atoms(aku_text)
    shifted = [a[:30] + f"{float(a[30:38]) + 50:8.3f}" + a[38:] for a in atoms]
    text = "\n".join(
        ["MODEL        1", *atoms, "ENDMDL", "MODEL        2", *shifted, "ENDMDL", "END"]
    )
    two = parse_structure(_write(tmp_path, "two.pdb", text + "\n"), chain="A")
    one = parse_structure(_write(tmp_path, "one.pdb", aku_text), chain="A")
    np.testing.assert_array_equal(
        two.coords[np.isfinite(two.coords)], one.coords[np.isfinite(one.coords)]
    )


def test_missing_seqres_uses_observed_residues(tmp_path, aku_text):
    atoms = _atoms(aku_text)
    structure = parse_structure(_write(tmp_path, "atoms.pdb", "\n".join(atoms) + "\n"), chain="A")
    assert structure.n_observed == len(structure.sequence) == len({a[22:27] for a in atoms})
