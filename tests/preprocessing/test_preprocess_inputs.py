"""Inputs as the pipeline sees them: URLs (downloaded, checksum-checked, cached) and large
plain files cut into parallel parse units (line numbers stay absolute)."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers_preprocess import read_records, read_tsv
from wensu.preprocessing import InputError, run_preprocess
from wensu.preprocessing.inputs import InputFile, plan_units


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_url_input_is_downloaded_checked_and_recorded(tmp_path, served):
    root, base = served
    text = b">u1\nMKVL\n>u2\nACDE\n"
    (root / "remote.fasta").write_bytes(text)
    sha = hashlib.sha256(text).hexdigest()
    cache = tmp_path / "cache"
    url = f"{base}/remote.fasta"
    run_preprocess(input=[f"{url}#sha256={sha}"], output=str(tmp_path / "out"),
                   download={"cache_dir": str(cache)}, progress=False)  # fmt: skip
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["url"] == url
    assert manifest["inputs"][0]["sha256"] == sha
    assert manifest["inputs"][0]["path"].startswith(str(cache))
    assert sorted(read_records(tmp_path / "out")) == ["u1", "u2"]
    wrong = {"cache_dir": str(tmp_path / "c2"), "sha256": {url: "0" * 64}}
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        run_preprocess(input=[url], output=str(tmp_path / "o2"), progress=False, download=wrong)


def test_large_plain_file_is_cut_into_units_with_absolute_lines(tmp_path):
    lines = []
    for i in range(3000):
        lines.append(f">r{i} some description")
        sequence = "MKVLACDEFG"[: 3 + i % 7] + "".join("ACDEFGHIKL"[int(c)] for c in f"{i:04d}")
        if i % 500 == 250:
            sequence = sequence[:2] + "J" + sequence[2:]  # invalid, quarantined with its line
        lines.extend([sequence[:5], sequence[5:]])
    path = tmp_path / "big.fasta"
    path.write_text("\n".join(lines) + "\n")
    item = InputFile(path=path, size=path.stat().st_size, gzip=False)
    units = plan_units([item], chunk_bytes=8192)
    assert len(units) > 5
    data = path.read_bytes()
    assert all(data[u.start : u.start + 1] == b">" for u in units)
    assert [u.end for u in units[:-1]] == [u.start for u in units[1:]]

    outputs = {}
    for workers in (1, 2):
        output = tmp_path / f"out{workers}"
        run_preprocess(input=[str(path)], output=str(output), num_workers=workers,
                       chunk_bytes=8192, progress=False)  # fmt: skip
        outputs[workers] = output
    rows = read_tsv(outputs[2] / "quarantine.tsv")
    expected = [(f"r{i}", 3 * i + 1) for i in range(3000) if i % 500 == 250]
    assert [(r["id"], int(r["line"])) for r in rows] == expected
    assert all(lines[int(r["line"]) - 1].startswith(f">{r['id']} ") for r in rows)
    first = json.loads((outputs[1] / "manifest.json").read_text())
    second = json.loads((outputs[2] / "manifest.json").read_text())
    first.pop("created"), second.pop("created")
    assert first == second
    assert first["counts"]["read"] == 3000 and first["counts"]["quarantined"] == len(expected)
