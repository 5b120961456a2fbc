"""The catalogue of malformed inputs: each case's documented outcome and exact accounting.

Outcomes: a bad record is quarantined (quarantine.tsv: id, reason, file, line, detail) or
filtered (counted by reason), duplicates go to duplicates.tsv, and an unreadable file stops
the run with an error naming the file and position. In every finished run
read == written + duplicates + filtered + quarantined.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers_preprocess import read_tsv, run_on
from wensu.preprocessing import InputError, run_preprocess

# name -> (file bytes, settings, written {id: sequence}, quarantined [(id, reason, line)],
#          filtered {reason: n})
CASES = {
    "crlf_line_endings": (
        b">a desc\r\nMKV\r\nLL\r\n>b\r\nAC\r\n", {}, {"a": "MKVLL", "b": "AC"}, [], {},
    ),
    "lowercase_is_uppercased": (b">a\nmkvl\nacd\n", {}, {"a": "MKVLACD"}, [], {}),
    "blank_lines_and_spaces": (b">a\n\nMK VL\n\n\n>b\nA C\n", {}, {"a": "MKVL", "b": "AC"}, [], {}),
    "terminal_stop_stripped": (b">a\nMKV*\n", {}, {"a": "MKV"}, [], {}),
    "internal_stop": (b">a\nMK*V\n>b\nMKL\n", {}, {"b": "MKL"}, [("a", "internal_stop", 1)], {}),
    "invalid_characters": (
        b">ok\nMKL\n>a\nMKJ1\n", {}, {"ok": "MKL"}, [("a", "invalid_characters", 3)], {},
    ),
    "gap_symbols_refused": (
        b">a\nMK-V\n>ok\nMKL\n", {}, {"ok": "MKL"}, [("a", "invalid_characters", 1)], {}
    ),  # (a run that writes nothing is an error: test_empty_inputs.py)
    "gap_symbols_allowed": (b">a\nMK-V\n", {"allow_gaps": True}, {"a": "MK-V"}, [], {}),
    "header_without_id": (
        b">\nMKV\n> only a description\nMKV\n>ok\nMKL\n",
        {},
        {"ok": "MKL"},
        [("", "missing_id", 1), ("", "missing_id", 3)],
        {},
    ),
    "sequence_before_first_header": (
        b"MKVLLA\nAAA\n>a\nMKL\n", {}, {"a": "MKL"}, [("", "sequence_before_header", 1)], {},
    ),
    "nul_bytes": (
        b">a\nMK\x00V\n>b\x00c\nMKV\n>ok\nMKL\n",
        {},
        {"ok": "MKL"},
        [("a", "binary_data", 1), ("b\\x00c", "binary_data", 3)],
        {},
    ),
    "non_utf8_header": (
        b">a\xff\xfe desc\nMKV\n>ok\nMKL\n", {}, {"ok": "MKL"},
        [("a\\xff\\xfe", "invalid_header_encoding", 1)], {},
    ),
    "empty_sequence": (b">a\n>b\n*\n>ok\nMKL\n", {}, {"ok": "MKL"},
                       [("a", "empty_sequence", 1), ("b", "empty_sequence", 2)], {}),
    "duplicate_id_other_sequence": (
        b">a\nMKV\n>a\nMKL\n", {}, {"a": "MKV"}, [("a", "duplicate_id", 3)], {},
    ),
    "too_short": (b">a\nMKV\n>b\nMKVLA\n", {"min_length": 5}, {"b": "MKVLA"}, [], {"too_short": 1}),
    "too_long_drop": (
        b">a\n" + b"A" * 25 + b"\n>b\nMKV\n", {"max_length": 10, "long_policy": "drop"},
        {"b": "MKV"}, [], {"too_long": 1},
    ),
    "too_long_crop": (
        b">a\n" + b"ACDEFGHIKL" * 3 + b"\n", {"max_length": 10, "long_policy": "crop"},
        {"a": "ACDEFGHIKL"}, [], {},
    ),
    "too_long_split": (
        b">a\n" + b"ACDEFGHIKLMNPQRSTVWYACDEF" + b"\n", {"max_length": 10, "long_policy": "split"},
        {"a/1-9": "ACDEFGHIK", "a/10-17": "LMNPQRST", "a/18-25": "VWYACDEF"}, [], {},
    ),
    "uniparc_inactive_filtered": (
        b">UPI0000000001 status=active\nMKV\n>UPI00000000AE status=inactive\nMKL\n",
        {"require_active": True}, {"UPI0000000001": "MKV"}, [], {"inactive": 1},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_case(tmp_path, name):
    data, settings, written, quarantined, filtered = CASES[name]
    out = run_on(tmp_path, {"case.fa": data}, split={"train": 1.0, "valid": 0.0, "test": 0.0},
                 **settings)  # fmt: skip
    got = {rid: rec["sequence"] for rid, rec in out["records"].items()}
    assert got == written
    rows = [(r["id"], r["reason"], int(r["line"])) for r in out["quarantine"]]
    assert rows == quarantined
    assert all(r["file"] == out["paths"][0] and r["detail"] for r in out["quarantine"])
    counts = out["manifest"]["counts"]
    originals = {rid.split("/")[0] for rid in written}
    assert counts["written"] == len(originals)
    assert counts["written_pieces"] == len(written)
    assert counts["filtered_by_reason"] == filtered
    assert counts["quarantined"] == len(quarantined)
    assert counts["read"] == (
        counts["written"] + counts["duplicates"] + counts["filtered"] + counts["quarantined"]
    )
    assert out["manifest"]["inputs"][0]["records"] == counts["read"]


def test_exact_duplicates_first_occurrence_wins_across_files(tmp_path):
    files = {
        "1.fa": b">a\nMKV\n>a\nMKV\n>b\nMKL\n",
        "2.fa.gz": gzip.compress(b">c\nmkl\n>d\nMKVV\n"),
    }
    out = run_on(tmp_path, files)
    assert sorted(out["records"]) == ["a", "b", "d"]
    rows = [(r["kept_id"], r["dropped_id"], r["file"], r["line"]) for r in out["duplicates"]]
    assert rows == [("a", "a", out["paths"][0], "3"), ("b", "c", out["paths"][1], "1")]
    counts = out["manifest"]["counts"]
    assert (counts["read"], counts["written"], counts["duplicates"]) == (5, 3, 2)


def test_zero_byte_file_reads_nothing(tmp_path):
    out = run_on(tmp_path, {"empty.fa": b"", "ok.fa": b">a\nMKV\n"})
    assert [i["records"] for i in out["manifest"]["inputs"]] == [0, 1]
    assert out["manifest"]["counts"]["read"] == 1 and list(out["records"]) == ["a"]


def test_binary_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"blob\.fa: not a FASTA file: binary data"):
        run_on(tmp_path, {"blob.fa": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"})
    assert not (tmp_path / "out" / "manifest.json").exists()


def _sequence(i: int) -> bytes:
    return b"MK" + bytes(b"ACDEFGHIKL"[int(c)] for c in f"{i:04d}") + b"W" * 294


def _truncated_gzip() -> tuple[bytes, bytes]:
    text = b"".join(b">r%d\n%s\n" % (i, _sequence(i)) for i in range(400))
    data = gzip.compress(text)
    return text, data[: len(data) // 2]


def test_truncated_gzip_stops_the_run_by_default(tmp_path):
    _, cut = _truncated_gzip()
    with pytest.raises(InputError) as info:
        run_on(tmp_path, {"ok.fa": b">a\nMKV\n", "cut.fa.gz": cut})
    message = str(info.value)
    assert "cut.fa.gz" in message and "uncompressed byte offset" in message and "line" in message
    assert "on_truncated=keep" in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_gzip_keep_policy(tmp_path):
    text, cut = _truncated_gzip()
    out = run_on(tmp_path, {"cut.fa.gz": cut}, on_truncated="keep")
    # Only whole records are kept: every written sequence is complete.
    kept = len(out["records"])
    assert {rid: rec["sequence"] for rid, rec in out["records"].items()} == {
        f"r{i}": _sequence(i).decode() for i in range(kept)
    }
    assert 0 < kept < 400
    assert [r["reason"] for r in out["quarantine"]] == ["truncated_input"]
    assert out["quarantine"][0]["id"] == f"r{kept}"[: len(out["quarantine"][0]["id"])]
    assert int(out["quarantine"][0]["line"]) == 2 * kept + 1
    truncated = out["manifest"]["inputs"][0]["truncated"]
    assert truncated["offset"] > 0 and "cut.fa.gz" in truncated["message"]
    counts = out["manifest"]["counts"]
    assert counts["read"] == kept + 1 and counts["quarantined_by_reason"] == {"truncated_input": 1}


def test_corrupt_gzip_is_an_error(tmp_path):
    data = bytearray(gzip.compress(b">a\n" + b"MKVL" * 5000 + b"\n"))
    data[30:60] = bytes(30)
    with pytest.raises(InputError, match=r"bad\.fa\.gz: corrupt gzip data"):
        run_on(tmp_path, {"bad.fa.gz": bytes(data)})


def test_directory_input_takes_fasta_files_in_sorted_order(tmp_path):
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.fasta").write_bytes(b">b\nMKV\n")
    (folder / "sub" / "a.faa.gz").write_bytes(gzip.compress(b">a\nMKV\n"))
    (folder / "README.md").write_text("not FASTA")
    run_preprocess(input=[str(folder)], output=str(tmp_path / "out"), progress=False)
    rows = read_tsv(tmp_path / "out" / "duplicates.tsv")
    assert [(r["kept_id"], r["dropped_id"]) for r in rows] == [("b", "a")]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["b.fasta", "a.faa.gz"]
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="empty_dir: directory holds no FASTA files"):
        run_preprocess(input=[str(tmp_path / "empty_dir")], output=str(tmp_path / "o2"))
