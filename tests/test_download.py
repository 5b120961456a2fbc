"""wensu.data.download against a local HTTP server with Range support (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wensu.data.download import (
    ChecksumMismatchError,
    DownloadError,
    cached_path,
    download,
    split_checksum,
)

PAYLOAD = bytes(range(256)) * 2000  # 512,000 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD at /data.fa.gz; ``cut_after`` makes the next GET stop after N bytes."""

    def __init__(self):
        self.requests: list[str | None] = []
        self.cut_after: int | None = None
        self.honour_range = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/data.fa.gz":
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                owner.requests.append(wanted)
                start = 0
                if wanted and owner.honour_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    end = len(PAYLOAD) - 1
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.cut_after is not None:
                    body, owner.cut_after = body[: owner.cut_after], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.fa.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def test_plain_download_and_cache_reuse(server, tmp_path):
    path = download(f"{server.url}#sha256={SHA}", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert path == cached_path(server.url, tmp_path) and path.name.endswith("-data.fa.gz")
    assert server.requests == [None]
    assert download(server.url, tmp_path, sha256=SHA) == path
    assert server.requests == [None]  # served from the cache


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.cut_after = 100_000
    path = download(server.url, tmp_path, sha256=SHA, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [None, "bytes=100000-"]
    assert not path.with_name(path.name + ".part").exists()


def test_partial_file_from_a_killed_run_is_resumed(server, tmp_path):
    final = cached_path(server.url, tmp_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.with_name(final.name + ".part").write_bytes(PAYLOAD[:300_000])
    assert download(server.url, tmp_path, sha256=SHA).read_bytes() == PAYLOAD
    assert server.requests == ["bytes=300000-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.honour_range = False
    final = cached_path(server.url, tmp_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.with_name(final.name + ".part").write_bytes(b"garbage" * 10)
    assert download(server.url, tmp_path, sha256=SHA).read_bytes() == PAYLOAD


def test_complete_partial_file_gets_416_and_is_accepted(server, tmp_path):
    final = cached_path(server.url, tmp_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    final.with_name(final.name + ".part").write_bytes(PAYLOAD)
    assert download(server.url, tmp_path, sha256=SHA).read_bytes() == PAYLOAD
    assert server.requests == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_mismatch_is_an_error_and_removes_the_file(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError, match=f"expected {wrong}, got {SHA}"):
        download(f"{server.url}#sha256={wrong}", tmp_path)
    final = cached_path(server.url, tmp_path)
    assert not final.exists() and not final.with_name(final.name + ".part").exists()


def test_errors_name_the_url(server, tmp_path):
    missing = server.url.replace("data.fa.gz", "missing.fa")
    with pytest.raises(DownloadError, match="missing.fa: HTTP 404"):
        download(missing, tmp_path)
    with pytest.raises(DownloadError, match="64 hex digits"):
        download(f"{server.url}#sha256=abc", tmp_path)
    with pytest.raises(DownloadError, match="unsupported URL fragment"):
        split_checksum(f"{server.url}#md5=abc")
    with pytest.raises(DownloadError, match="different SHA-256"):
        download(f"{server.url}#sha256={SHA}", tmp_path, sha256="1" * 64)
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        download("http://127.0.0.1:9/x.fa", tmp_path, retries=1, backoff=0, timeout=2)
