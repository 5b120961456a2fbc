"""SS test sets from user files: label CSV, 3-line FASTA, DSSP output, PDB/mmCIF via mkdssp."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, require_shared
from helpers_probe_cli import probe_cli_args, run_eval, tiny_checkpoint

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.common.inputs import resolve_entries
from wensu.probes.ss.dssp import dssp_file_record, structure_ss_record
from wensu.probes.ss.user_sets import SS_SUFFIXES, load_user_ss_set, read_label_csv

EXAMPLES = REPO_ROOT / "examples" / "eval"
STRUCTURES = EXAMPLES / "structures"


@pytest.fixture
def mkdssp() -> str:
    """mkdssp's path; skip without it (CI: fail, since `make test` installs Debian dssp)."""
    found = shutil.which("mkdssp")
    if found is None:
        message = "mkdssp not installed (Debian package dssp; make system-deps)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


needs_mkdssp = pytest.mark.usefixtures("mkdssp")


def _load(entry: str | Path):
    [user_set] = resolve_entries([str(entry)], set(), SS_SUFFIXES, where="probe.ss.test_sets")
    return load_user_ss_set(user_set)


def test_label_csv_with_unscored_residues():
    loaded = _load(EXAMPLES / "ss" / "casp12_netsurfp.csv")
    first = loaded.records[0]
    assert loaded.name == "casp12_netsurfp" and len(loaded.records) == 5
    with open(EXAMPLES / "ss" / "casp12_netsurfp.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert first.id == "CASP12_row1" and first.sequence == row["seq"]
    assert list(first.mask) == [c != "-" for c in row["q3"]]
    assert first.labels(3)[~first.mask].tolist() == [-100] * int((~first.mask).sum())
    assert first.ss8 is not None and len(first.ss8) == len(first.sequence)


def test_three_line_fasta_is_eight_state_with_derived_q3():
    loaded = _load(EXAMPLES / "ss" / "dnss2_casp12.fasta")
    record = loaded.records[0]
    assert record.id == "T0859" and record.ss8 is not None
    assert set(record.ss3) <= set("HEC") and record.mask.all()
    assert all(
        (e in "HGI") == (t == "H") and (e in "EB") == (t == "E")
        for e, t in zip(record.ss8, record.ss3, strict=True)
    )


def test_dssp_output_file():
    record = dssp_file_record(EXAMPLES / "ss" / "1AKI.dssp")
    assert record.id == "1AKI_A" and len(record.sequence) == 129
    assert record.sequence.startswith("KVFGRCELAAAMKRHG")  # bonded cysteines back to C


@needs_mkdssp
def test_structures_match_the_shared_mkdssp_labels():
    """Labels from each example structure equal the shared derived labels (mkdssp 4.2.2 mapped to
    SEQRES with gemmi): insertion codes (1DIX), altlocs (6MRR), unobserved residues (1VFY, 2BUK),
    three NMR models (1LCD, model 1), PDB and mmCIF, plain and gzip."""
    shared = require_shared("structure/pdb_entries/dssp_labels.csv")
    with open(shared, newline="") as handle:
        published = {row["pdb_id"]: row for row in csv.DictReader(handle)}
    loaded = _load(STRUCTURES)
    assert loaded.name == "structures" and not loaded.skipped
    assert [r.id for r in loaded.records] == [
        "1AKI_A", "1DIX_A", "1LCD_A", "1VFY_A", "2BUK_A", "6MRR_A"
    ]  # fmt: skip
    for record in loaded.records:
        row = published[record.id.split("_")[0]]
        ours = "".join(c if m else "-" for c, m in zip(record.ss8, record.mask, strict=True))
        assert (record.sequence, ours) == (row["sequence"], row["dssp8"]), record.id


@needs_mkdssp
def test_chain_selection_and_absent_chain_is_skipped_with_a_count(tmp_path):
    record = structure_ss_record(STRUCTURES / "1LCD.cif.gz", "A")
    assert record.id == "1LCD_A" and len(record.sequence) == 51
    listing = tmp_path / "mine.txt"
    listing.write_text(f"{STRUCTURES / '1AKI.cif'}:A\n{STRUCTURES / '1AKI.cif'}:Q\n")
    loaded = _load(listing)
    assert len(loaded.records) == 1 and loaded.skipped == {"chain_missing": 1}
    assert "1AKI.cif chain Q: chain_missing" in loaded.errors[0]


def test_missing_mkdssp_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ProbeDataError, match="need mkdssp .*apt-get install dssp"):
        structure_ss_record(STRUCTURES / "1AKI.cif")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,seq,q3\na,MKV,HH\n", r"line 2: q3 has 2 labels for 3 residues"),
        ("id,seq,q3\na,MKV,HXE\n", r"line 2: q3 has unknown labels 'X'"),
        ("id,seq,q3,q8\na,MKV,HHE,HHQ\n", r"line 2: q8 has unknown labels 'Q'"),
        ("id,seq,q3\na,MK1,HHE\n", r"line 2: .*1"),
        ("id,seq\na,MKV\n", r"lacks \['q3'\]"),
        ("id,seq,q3\n", r"no records"),
        ("", r"empty file"),
    ],
)
def test_bad_label_csv(tmp_path, text, message):
    path = tmp_path / "mine.csv"
    path.write_text(text)
    with pytest.raises(ProbeDataError, match=message) as err:
        read_label_csv(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (">a\nMKV\nHH\n", r"record 1 \(line 1\): q3 has 2 labels for 3 residues"),
        (">a\nMKV\nHHE\n>b\nMK\n", r"record 2 \(line 4\): a record is 3 lines"),
        ("MKV\nHHE\n>a\n", r"record 1 \(line 1\): expected a '>' header"),
        (">a\nMKV\nHZE\n", r"unknown labels 'Z'"),
    ],
)
def test_bad_three_line_fasta(tmp_path, text, message):
    path = tmp_path / "mine.fasta"
    path.write_text(text)
    with pytest.raises(ProbeDataError, match=message):
        _load(path)


def test_gzipped_user_files_and_duplicate_ids(tmp_path):
    path = tmp_path / "twice.csv.gz"
    path.write_bytes(gzip.compress(b"id,seq,q3\na,MKV,HHE\na,MKL,HHC\n"))
    with pytest.raises(ProbeDataError, match=r"record ids listed twice: \['a'\]"):
        _load(path)


@needs_mkdssp
def test_wensu_eval_ss_on_user_files(tmp_path):
    data = require_shared("structure/secondary_structure")
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt", seed=3, max_length=512)
    user_sets = f"[{EXAMPLES / 'ss' / 'casp12_netsurfp.csv'},{STRUCTURES},casp12]"
    args = probe_cli_args(
        checkpoint,
        "ss",
        data.parents[1],
        f"probe.ss.fast.test_sets={user_sets}",
        "probe.ss.fast.max_train=12",
        "probe.ss.fast.max_valid=6",
        "probe.ss.fast.training.max_epochs=1",
        "probe.ss.heads=[linear]",
    )
    done = run_eval(tmp_path, args)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "ss" / "metrics.json").read_text())
    tasks = {row["task"] for row in metrics["rows"]}
    assert {"SS3 casp12_netsurfp", "SS8 casp12_netsurfp", "SS3 structures", "SS3 CASP12"} <= tasks
    assert metrics["details"]["test_sizes"] == {"casp12_netsurfp": 5, "structures": 6, "casp12": 20}
    inputs = {Path(i["path"]).name for i in metrics["inputs"]}
    assert {"casp12_netsurfp.csv", "1DIX.cif.gz", "CASP12_HHblits.csv.gz"} <= inputs
    q3 = [r for r in metrics["rows"] if r["task"] == "SS3 structures"][0]["values"]
    assert all(0.0 <= v <= 1.0 for v in q3.values()) and np.isfinite(list(q3.values())).all()


def test_bad_dssp_files(tmp_path):
    text = (EXAMPLES / "ss" / "1AKI.dssp").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(text) if line.startswith("  #  RESIDUE"))
    odd = text[: start + 3] + [text[start + 3][:16] + "Q" + text[start + 3][17:]]
    bad_state = tmp_path / "odd.dssp"
    bad_state.write_text("".join(odd))
    with pytest.raises(
        ProbeDataError, match=rf"odd\.dssp line {start + 4}: unknown DSSP state 'Q'"
    ):
        _load(bad_state)
    not_dssp = tmp_path / "notes.dssp"
    not_dssp.write_text("HEADER only\n")
    with pytest.raises(ProbeDataError, match=r"notes\.dssp: not a DSSP file"):
        _load(not_dssp)
    other_chain = dssp_file_record(EXAMPLES / "ss" / "1AKI.dssp", "A")
    assert other_chain.id == "1AKI_A"
    listing = tmp_path / "l.txt"
    listing.write_text(f"{EXAMPLES / 'ss' / '1AKI.dssp'}:B\n{EXAMPLES / 'ss' / '1AKI.dssp'}\n")
    loaded = _load(listing)
    assert loaded.skipped == {"chain_missing": 1} and len(loaded.records) == 1
