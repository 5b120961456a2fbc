"""wensu.atomic: a file is replaced whole or not at all (manifests, vocabularies, checkpoints)."""

from __future__ import annotations

import pytest

from wensu.atomic import atomic_file, write_text_atomic


def test_text_and_binary_writes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "manifest.json", "{}\n")
    assert path.read_text() == "{}\n"
    with atomic_file(tmp_path / "weights.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "weights.bin").read_bytes() == b"\x00\x01"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_text_atomic(tmp_path / "vocab.json", "old")
    with pytest.raises(RuntimeError), atomic_file(path) as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert not (tmp_path / "vocab.json.tmp").exists()
