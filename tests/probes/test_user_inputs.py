"""The shared resolver of probe set entries: built-in name, file, folder, glob or list file."""

from __future__ import annotations

from pathlib import Path

import pytest

from wensu.probes.common.errors import ProbeDataError
from wensu.probes.common.inputs import (
    UserSet,
    file_stem,
    resolve_entries,
    split_selector,
)

SUFFIXES = (".pdb", ".cif")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_builtin_names_pass_through_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "cb513")  # a file of that name does not shadow the built-in
    assert resolve_entries(["cb513", "ts115"], {"cb513", "ts115"}, SUFFIXES, where="t") == [
        "cb513",
        "ts115",
    ]


def test_file_folder_glob_and_list(tmp_path):
    a = _touch(tmp_path / "set" / "1abc.pdb")
    b = _touch(tmp_path / "set" / "2xyz.cif.gz")
    _touch(tmp_path / "set" / "notes.md")
    listing = tmp_path / "mine.list"
    listing.write_text("# chains\nset/1abc.pdb:B\n\nset/2xyz.cif.gz  # second\n")
    single, folder, listed = resolve_entries(
        [f"{a}:A", str(tmp_path / "set"), str(listing)], set(), SUFFIXES, where="t"
    )
    [pattern] = resolve_entries([str(tmp_path / "set" / "*.pdb")], set(), SUFFIXES, where="t")
    assert (single.name, single.files[0].path, single.files[0].selector) == ("1abc", a, "A")
    assert folder.name == "set" and [f.path for f in folder.files] == [a, b]
    assert isinstance(pattern, UserSet) and [f.path for f in pattern.files] == [a]
    assert listed.name == "mine"
    assert [(f.path, f.selector) for f in listed.files] == [(a, "B"), (b, None)]
    assert file_stem(b) == "2xyz"


def test_selector_only_when_the_path_does_not_exist_as_written(tmp_path):
    odd = _touch(tmp_path / "weird:A")
    assert split_selector(str(odd)) == (str(odd), None)
    assert split_selector("x.cif:AB") == ("x.cif", "AB")
    assert split_selector("x.cif") == ("x.cif", None)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "cb51", r"not a built-in set \(cb513\) and no such file"),
        (lambda d: str(_touch(d / "x.txt").parent / "empty_dir_missing"), "no such file"),
        (lambda d: str((d / "e").mkdir() or d / "e"), r"folder .* holds no \.pdb/\.cif files"),
        (lambda d: str(d / "*.cif"), "the pattern matches no"),
        (lambda d: str(_touch(d / "y.csv")), r"y\.csv is not a format this probe reads"),
    ],
)
def test_bad_entries_name_the_entry(tmp_path, make, message):
    entry = make(tmp_path)
    with pytest.raises(ProbeDataError, match=message) as err:
        resolve_entries([entry], {"cb513"}, SUFFIXES, where="probe.ss.test_sets")
    assert f"probe.ss.test_sets entry {entry!r}" in str(err.value)


def test_list_file_line_with_missing_file(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("a.pdb\nmissing.pdb\n")
    _touch(tmp_path / "a.pdb")
    with pytest.raises(ProbeDataError, match=r"l\.txt line 2: no such file"):
        resolve_entries([str(listing)], set(), SUFFIXES, where="w")


def test_two_entries_with_one_name(tmp_path):
    a = _touch(tmp_path / "a" / "s.pdb")
    b = _touch(tmp_path / "b" / "s.cif")
    with pytest.raises(ProbeDataError, match="both named 's'"):
        resolve_entries([str(a), str(b)], set(), SUFFIXES, where="w")


def test_finished_probe_is_not_reused_after_its_input_file_changes(tmp_path):
    from wensu.probes.common.context import input_hashes, write_json
    from wensu.probes.common.results import reusable_payload

    data = tmp_path / "mine.csv"
    data.write_text("id,seq,q3\na,MKV,HHE\n")
    fingerprint = {"settings": {"test_sets": [str(data)]}}
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"fingerprint": fingerprint, "inputs": input_hashes([data])})
    assert reusable_payload(metrics, fingerprint) is not None
    data.write_text("id,seq,q3\na,MKV,HHC\n")
    assert reusable_payload(metrics, fingerprint) is None
    data.unlink()
    assert reusable_payload(metrics, fingerprint) is None
