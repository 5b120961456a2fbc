"""Contact sets from user files: PDB/mmCIF folders and lists, backbone JSON/JSONL layouts."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, require_shared
from helpers_probe_cli import probe_cli_args, run_eval, tiny_checkpoint

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.common.inputs import resolve_entries
from wensu.probes.common.structures import contact_map, parse_structure
from wensu.probes.contacts.data import load_contact_set
from wensu.probes.contacts.user_sets import CONTACT_SUFFIXES, load_user_contact_set

EXAMPLES = REPO_ROOT / "examples" / "eval"
STRUCTURES = EXAMPLES / "structures"


def _load(entry, **options):
    [user_set] = resolve_entries([str(entry)], set(), CONTACT_SUFFIXES, where="t")
    return load_user_contact_set(user_set, show_progress=False, **options)


def test_structure_folder_matches_the_shared_gemmi_backbones():
    """Cβ (Cα for Gly) of every example equals the shared gemmi-derived coordinates (model 1,
    first altloc, SEQRES-aligned): altlocs (6MRR), insertion codes (1DIX), unobserved residues
    (1VFY, 2BUK), 3 NMR models (1LCD), PDB and mmCIF, plain and gzip."""
    path = require_shared("structure/pdb_entries/rep_chain_backbone.json.gz")
    with gzip.open(path, "rt") as handle:
        shared = {r["pdb_id"]: r for r in json.load(handle)}
    loaded = _load(STRUCTURES)
    assert loaded.name == "structures" and not loaded.skipped and len(loaded.structures) == 6
    for structure in loaded.structures:
        row = shared[structure.name.split("_")[0]]
        expected = np.full((len(row["seq"]), 3), np.nan)
        for i, (aa, atoms) in enumerate(zip(row["seq"], row["coords"], strict=True)):
            atom = None if atoms is None else atoms[1 if aa == "G" else 4]
            expected[i] = np.nan if atom is None else atom
        assert structure.sequence == row["seq"], structure.name
        np.testing.assert_allclose(structure.coords, expected, atol=1e-3, err_msg=structure.name)
        contacts, valid = contact_map(structure.coords)
        assert valid.sum() == np.isfinite(expected).all(1).sum() ** 2


def test_unobserved_residues_are_masked():
    structure = parse_structure(STRUCTURES / "2BUK.pdb")
    observed = np.isfinite(structure.coords).all(axis=1)
    assert len(structure.sequence) == 196 and observed.sum() == 184
    contacts, valid = contact_map(structure.coords)
    assert not valid[~observed].any() and not contacts[~observed].any()


def _cut(source: Path, target: Path, drop: range) -> Path:
    """``source`` without SEQRES and without the ATOM records of residues ``drop``."""
    kept = [
        line
        for line in source.read_text().splitlines(keepends=True)
        if not line.startswith("SEQRES")
        and not (line.startswith("ATOM") and int(line[22:26]) in drop)
    ]
    target.write_text("".join(kept))
    return target


def test_gap_without_seqres_becomes_unknown_residues(tmp_path):
    """A PDB with an internal gap and no SEQRES: the gap is X residues without coordinates, so
    residues on either side keep their distance in sequence; other coordinates are unchanged."""
    full = parse_structure(_cut(STRUCTURES / "2BUK.pdb", tmp_path / "full.pdb", range(0)))
    [gapped] = _load(_cut(STRUCTURES / "2BUK.pdb", tmp_path / "gap.pdb", range(60, 65))).structures
    assert gapped.filled == 5 and len(gapped.sequence) == len(full.sequence)
    hole = [i for i, c in enumerate(gapped.sequence) if c == "X"]
    assert len(hole) == 5 and not np.isfinite(gapped.coords[hole]).any()
    others = np.setdiff1d(np.arange(len(full.sequence)), hole)
    np.testing.assert_array_equal(gapped.coords[others], full.coords[others])
    joined = parse_structure(tmp_path / "gap.pdb")  # built-in behaviour: observed residues only
    assert len(joined.sequence) == len(full.sequence) - 5


def test_hetatm_only_and_absent_chains_are_skipped_with_counts(tmp_path):
    lines = (STRUCTURES / "1VFY.pdb").read_text().splitlines(keepends=True)
    edited = [line[:21] + "Z" + line[22:] if line.startswith("HETATM") else line for line in lines]
    pdb = tmp_path / "1vfy_het.pdb"
    pdb.write_text("".join(edited))
    listing = tmp_path / "chains.txt"
    listing.write_text(f"{pdb}:A\n{pdb}:Z\n{pdb}:Q\n")
    loaded = _load(listing)
    assert [s.name for s in loaded.structures] == ["1vfy_het_A"]
    assert loaded.skipped == {"not_protein": 1, "chain_missing": 1}
    assert any("chain Z: not_protein" in e for e in loaded.errors)
    assert any("chain Q: chain_missing" in e for e in loaded.errors)


def test_min_plddt_masks_low_b_factor_residues():
    plain = parse_structure(STRUCTURES / "1AKI.cif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from Bio.PDB import MMCIFParser

        chain = MMCIFParser(QUIET=True).get_structure("x", str(STRUCTURES / "1AKI.cif"))[0]["A"]
    b = np.array([r["CA"].get_bfactor() for r in chain if r.id[0] == " "])
    threshold = float(np.median(b))
    masked = parse_structure(STRUCTURES / "1AKI.cif", min_plddt=threshold)
    assert masked.low_plddt == int((b < threshold).sum()) > 0
    assert masked.n_observed == plain.n_observed - masked.low_plddt


def test_both_backbone_layouts_give_the_builtin_contact_maps():
    cath = load_contact_set(
        "cath103", require_shared("structure"), limit=3, show_progress=False
    ).structures
    chain_set = _load(EXAMPLES / "contacts" / "cath_sample.chain_set.jsonl").structures
    ts50 = load_contact_set("ts50", require_shared("structure"), limit=3, show_progress=False)
    per_residue = _load(EXAMPLES / "contacts" / "ts50_sample.json").structures
    for builtin, user in [
        *zip(cath, chain_set, strict=True),
        *zip(ts50.structures, per_residue, strict=True),
    ]:
        assert (builtin.name, builtin.sequence) == (user.name, user.sequence)
        np.testing.assert_array_equal(contact_map(builtin.coords)[0], contact_map(user.coords)[0])


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"name": "d1", "seq": "MKV", "coords": {"X": [[0, 0, 0]]}}, "unknown backbone layout"),
        ({"name": "d1", "seq": "MKV", "coords": "1.0 2.0"}, "unknown backbone layout"),
        ({"name": "d1", "sequence": "MKV"}, r"needs 'seq' and 'coords'"),
        (
            {"name": "d1", "seq": "MK", "coords": {"N": [[0, 0]], "CA": [[0, 0]], "C": [[0, 0]]}},
            r"malformed coordinates \(an atom is \[x, y, z\]",
        ),
    ],
)
def test_unknown_backbone_layout_is_an_error_naming_the_file(tmp_path, record, message):
    path = tmp_path / "domains.jsonl"
    path.write_text(
        json.dumps({"name": "ok", "seq": "G", "coords": [[[0, 0, 0]] * 4]})
        + "\n"
        + json.dumps(record)
        + "\n"
    )
    with pytest.raises(ProbeDataError, match=message) as err:
        _load(path)
    assert f"{path} line 2" in str(err.value)


def test_length_mismatch_record_is_skipped_with_a_count(tmp_path):
    path = tmp_path / "mixed.json"
    good = {"name": "a", "seq": "GG", "coords": [[[0, 0, 0]] * 4, [[4, 0, 0]] * 4]}
    short = {"name": "b", "seq": "GGG", "coords": [[[0, 0, 0]] * 4]}
    path.write_text(json.dumps([good, short]))
    loaded = _load(path)
    assert [s.name for s in loaded.structures] == ["a"]
    assert loaded.skipped == {"sequence_mismatch": 1}


def test_wensu_eval_contacts_with_user_train_and_test_sets(tmp_path):
    data = require_shared("structure")
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=5, max_length=512)
    args = probe_cli_args(
        checkpoint,
        "contacts",
        data.parent,
        f"probe.contacts.train_set={EXAMPLES / 'contacts'}",
        "probe.contacts.train_size=6",
        f"probe.contacts.fast.test_sets=[{STRUCTURES},{STRUCTURES / '1AKI.cif'}:Q,pdb_entries]",
        "probe.contacts.fast.test_limit=3",
        "probe.contacts.min_plddt=5",
    )
    done = run_eval(tmp_path, args)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "contacts" / "metrics.json").read_text())
    structures = metrics["details"]["structures"]
    assert structures["train:contacts"]["evaluated"] == 6
    # fast: the 3 smallest files; 1LCD (NMR, B-factors 0) has every residue under min_plddt
    assert structures["structures"]["evaluated"] == 2
    assert structures["structures"]["skipped"]["no_coordinates"] == 1
    assert structures["1AKI"]["skipped"]["chain_missing"] == 1
    assert metrics["skipped"]["chain_missing"] == 1
    assert {"contacts structures", "contacts pdb_entries"} <= {r["task"] for r in metrics["rows"]}


def test_bad_entry_is_one_line_on_the_command_line(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=5, max_length=512)
    bad = tmp_path / "domains.jsonl"
    bad.write_text(json.dumps({"name": "d", "seq": "MK", "coords": {"P": []}}) + "\n")
    args = probe_cli_args(
        checkpoint, "contacts", require_shared("structure").parent,
        f"probe.contacts.fast.test_sets=[{bad}]",
    )  # fmt: skip
    done = run_eval(tmp_path, args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {bad} line 1 (d): unknown")
