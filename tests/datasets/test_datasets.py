"""The data registry, data-directory resolution and fetching (against a local HTTP server on
127.0.0.1 that serves the real data layout)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import require_shared

from wensu.datasets import DataNotFound, data_root, load_registry, locate
from wensu.datasets.fetch import FetchError, fetch_file, fetch_set, file_ok, verify_set
from wensu.datasets.registry import DataFile


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Truncating(http.server.SimpleHTTPRequestHandler):
    """Announces the whole file, sends half of it, then drops the connection."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.close()

    def log_message(self, *args):
        pass


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path, handler=_Quiet) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_registry_matches_the_real_data():
    root = require_shared("")
    registry = load_registry()
    assert {"ss", "contacts", "amr", "scop", "variants", "pbmc", "proteomes"} <= set(registry)
    scop = registry["scop"].files[0]
    stored = (root / scop.path).read_bytes()
    assert _sha(stored) == scop.sha256 and len(stored) == scop.size
    assert scop.prepare == "gzip" and _sha(gzip.decompress(stored)) == scop.source_sha256
    assert scop.url.startswith("https://raw.githubusercontent.com/soedinglab/MMseqs2/")
    assert verify_set("ss", root) == []


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("WENSU_DATA", str(tmp_path / "env"))
    assert data_root(str(tmp_path / "opt")) == tmp_path / "opt"
    assert data_root(None) == tmp_path / "env"
    monkeypatch.delenv("WENSU_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root(None) == tmp_path / "cache" / "wensu" / "data"


def test_fetch_from_mirror_verifies_and_resumes(serve, tmp_path):
    root = require_shared("")
    mirror = serve(root)
    cache = tmp_path / "cache"
    assert fetch_set("scop", cache, mirror=mirror, progress=False) == {"present": 0, "fetched": 1}
    assert verify_set("scop", cache) == []
    # a second fetch finds the verified file and downloads nothing
    assert fetch_set("scop", cache, mirror=mirror, progress=False) == {"present": 1, "fetched": 0}
    assert locate("scop", cache, allow_fetch=False).origin == "data_dir"


def test_fetch_upstream_download_is_stored_gzipped(serve, tmp_path):
    root = require_shared("")
    scop = load_registry()["scop"].files[0]
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "DB.fasta").write_bytes(gzip.decompress((root / scop.path).read_bytes()))
    url = serve(upstream) + "/DB.fasta"
    entry = DataFile(scop.path, scop.sha256, scop.size, url, scop.source_sha256, "gzip")
    assert fetch_file(entry, tmp_path / "cache", progress=False) == "fetched"
    assert file_ok(entry, tmp_path / "cache" / scop.path)


def _no_partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_checksum_mismatch_404_and_interrupted_leave_nothing(serve, tmp_path):
    root = require_shared("")
    scop = load_registry()["scop"].files[0]
    tampered = tmp_path / "tampered"
    (tampered / Path(scop.path).parent).mkdir(parents=True)
    (tampered / scop.path).write_bytes((root / scop.path).read_bytes()[:-10] + b"0123456789")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_file(scop, cache, mirror=serve(tampered), progress=False)
    assert _no_partial_files(cache) == []
    with pytest.raises(FetchError, match="download failed.*404"):
        fetch_file(scop, cache, mirror=serve(tmp_path / "empty_mirror_dir_absent"), progress=False)
    assert _no_partial_files(cache) == []
    with pytest.raises(FetchError, match="download failed|checksum mismatch"):
        fetch_file(scop, cache, mirror=serve(root, _Truncating), progress=False)
    assert _no_partial_files(cache) == []


def test_derived_file_without_mirror_says_what_to_do(tmp_path):
    derived = next(f for f in load_registry()["amr"].files if f.url is None)
    with pytest.raises(FetchError, match="no public upstream file.*--mirror"):
        fetch_file(derived, tmp_path, progress=False)


def test_offline_locate_names_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("WENSU_OFFLINE", "1")
    with pytest.raises(DataNotFound) as error:
        locate("contacts", tmp_path)
    message = str(error.value)
    assert "wensu-data fetch contacts" in message and "\n" not in message
    assert "shared" not in message


def test_cli_list_fetch_verify(serve, tmp_path):
    root = require_shared("")
    cli = [sys.executable, "-m", "wensu.datasets.cli", "--data-dir", str(tmp_path)]
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, check=True).stdout
    assert "scop" in listed and "missing" in listed
    fetched = subprocess.run(
        [*cli, "fetch", "scop", "--mirror", serve(root), "--quiet"], capture_output=True, text=True
    )
    assert fetched.returncode == 0, fetched.stderr
    verified = subprocess.run([*cli, "verify", "scop"], capture_output=True, text=True)
    assert verified.returncode == 0 and "scop: ok" in verified.stdout
    path = tmp_path / load_registry()["scop"].files[0].path
    path.write_bytes(b"corrupt")
    verified = subprocess.run([*cli, "verify", "scop"], capture_output=True, text=True)
    assert verified.returncode == 1 and "1 missing or corrupt" in verified.stdout
    unknown = subprocess.run([*cli, "fetch", "nope"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown data set" in unknown.stderr


def test_probe_fetches_its_set_on_first_use(serve, tmp_path):
    """wensu-eval with an empty data directory downloads the probe's set (here from a local
    mirror), checks it, and evaluates; offline it stops with the fetch command instead."""
    import torch

    from wensu.checkpoint import save_encoder_checkpoint
    from wensu.model import Encoder, EncoderConfig

    root = require_shared("")
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.ckpt"
    save_encoder_checkpoint(
        Encoder(EncoderConfig(num_layers=1, d_model=16, num_heads=2, ffn_dim=32)), checkpoint
    )
    script = Path(sys.executable).with_name("wensu-eval")
    args = [
        str(script),
        f"checkpoint={checkpoint}",
        "probe=perplexity",
        "probe.perplexity.max_sequences=20",
        f"data_dir={tmp_path / 'data'}",
        f"output={tmp_path / 'report'}",
        "progress=false",
    ]
    env = {**os.environ, "WENSU_OFFLINE": "1"}
    offline = subprocess.run(args, capture_output=True, text=True, env=env)
    assert offline.returncode == 2
    assert "wensu-data fetch scop" in offline.stderr and "Traceback" not in offline.stderr
    env = {k: v for k, v in os.environ.items() if k != "WENSU_OFFLINE"}
    env["WENSU_DATA_MIRROR"] = serve(root)
    fetched = subprocess.run(args, capture_output=True, text=True, env=env)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert verify_set("scop", tmp_path / "data") == []
    assert (tmp_path / "report" / "perplexity" / "metrics.json").is_file()
