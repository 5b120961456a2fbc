"""Empty is an error, not a dataset; inputs that can be read only once are refused, never hang."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from wensu.preprocessing import run_preprocess
from wensu.preprocessing.errors import EmptyDatasetError, InputError

WENSU_PREPROCESS = str(Path(sys.executable).parent / "wensu-preprocess")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "holds no FASTA record"),
        (b"\n\n", "holds no FASTA record"),
        (b">a\nMK-V\n>b\nMK*V\n", "all 2 records of"),  # all quarantined
    ],
)
def test_nothing_written_is_an_error_and_nothing_is_published(tmp_path, data, expected):
    path = _write(tmp_path, "in.fa", data)
    out = tmp_path / "out"
    with pytest.raises(EmptyDatasetError) as caught:
        run_preprocess(input=[str(path)], output=str(out), progress=False)
    message = str(caught.value)
    assert expected in message and str(path) in message and "no dataset was published" in message
    assert not (out / "manifest.json").exists() and not list(out.glob("*/shard-*.h5"))
    if b">" in data:  # the records went to the quarantine report, which the message names
        assert str(out / "quarantine.tsv") in message
        assert len((out / "quarantine.tsv").read_text().splitlines()) == 3


def test_empty_fasta_cli_is_one_line_exit_2(tmp_path):
    path = _write(tmp_path, "empty.fa", b"")
    result = subprocess.run(
        [WENSU_PREPROCESS, f"input={path}", f"output={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert (
        len(errors) == 1 and "no record written" in errors[0] and "Traceback" not in result.stderr
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "in.fa"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock_if_opened() -> None:  # a hang would wait here for a writer forever
        if not done.wait(30):
            with open(fifo, "wb") as handle:
                handle.write(b">a\nMKV\n")

    threading.Thread(target=unblock_if_opened, daemon=True).start()
    try:
        with pytest.raises(InputError, match="not a regular file"):
            run_preprocess(input=[str(fifo)], output=str(tmp_path / "out"), progress=False)
        folder = tmp_path / "folder"
        folder.mkdir()
        os.mkfifo(folder / "x.fasta")
        with pytest.raises(InputError, match=r"x\.fasta: not a regular file"):
            run_preprocess(input=[str(folder)], output=str(tmp_path / "out2"), progress=False)
    finally:
        done.set()


def test_stdin_pipe_is_refused_clearly(tmp_path):
    result = subprocess.run(
        [WENSU_PREPROCESS, "input=/dev/stdin", f"output={tmp_path / 'out'}"],
        input=">a\nMKVLA\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "/dev/stdin: not a regular file" in result.stderr
    assert "cat > input.fasta" in result.stderr
