"""Download an input over HTTP(S) into a cache, resuming with Range requests, checking SHA-256.

A download goes to ``<cache>/<name>.part`` and is renamed to its final name only when complete
and (if a checksum is known) verified, so a killed download resumes where it stopped and a
cached file is never half-written. The checksum comes from ``url#sha256=<hex>`` or the caller.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from wensu.data.shards import sha256_file

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_BLOCK = 1 << 20


class DownloadError(ValueError):
    """A URL could not be downloaded (bad status, repeated network failure)."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the expected SHA-256."""


def is_url(text: str) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return text.startswith(("http://", "https://"))


def split_checksum(url: str) -> tuple[str, str | None]:
    """``"https://x/a.gz#sha256=ab.."`` -> ``("https://x/a.gz", "ab..")``; no fragment -> None."""
    base, _, fragment = url.partition("#")
    if not fragment:
        return base, None
    key, _, value = fragment.partition("=")
    if key.lower() != "sha256":
        raise DownloadError(f"{url}: unsupported URL fragment {fragment!r} (use #sha256=<hex>)")
    return base, _check_hex(value, url)


def _check_hex(value: str, url: str) -> str:
    value = value.strip().lower()
    if not _SHA256_HEX.fullmatch(value):
        raise DownloadError(f"{url}: expected SHA-256 must be 64 hex digits, got {value!r}")
    return value


def cached_path(url: str, cache_dir: Path) -> Path:
    """Where ``url`` is cached: the file name prefixed by a hash of the URL (no collisions)."""
    base, _ = split_checksum(url)
    name = unquote(Path(urlsplit(base).path).name) or "download"
    tag = hashlib.sha256(base.encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{tag}-{name}"


class _Retryable(Exception):
    """A transfer that broke off; the next attempt resumes from the bytes already saved."""


def _transfer(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "wensu-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            if err.headers.get("Content-Range", "").rpartition("/")[2] == str(have):
                return  # the partial file already holds every byte
            part.unlink()
            raise _Retryable("server refused the resume range; starting over") from None
        if err.code >= 500:
            raise _Retryable(f"HTTP {err.code}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Retryable(str(err)) from None
    with response:
        if response.status == 206:
            found = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if found is None or int(found.group(1)) != have:
                raise DownloadError(f"{url}: server answered a resume with a different range")
            mode, expected = "ab", int(found.group(2)) + 1
        else:  # 200: the server ignored Range, so the whole file comes again
            mode, have = "wb", 0
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
        written = have
        with open(part, mode) as out:
            try:
                while block := response.read(_BLOCK):
                    out.write(block)
                    written += len(block)
            except (OSError, http.client.HTTPException) as err:
                raise _Retryable(f"connection broke after {written:,} bytes ({err})") from None
            finally:
                out.flush()
                os.fsync(out.fileno())
        if expected is not None and written < expected:
            raise _Retryable(f"connection closed after {written:,} of {expected:,} bytes")


def download(
    url: str,
    cache_dir: Path,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``url`` (optionally ``url#sha256=<hex>``) into ``cache_dir``; return its path.

    A cached complete file is reused (after a checksum check when one is known). Broken
    transfers are retried up to ``retries`` times, each resuming with an HTTP Range request.
    Raises :class:`ChecksumMismatchError` (the bad file is removed) or :class:`DownloadError`.
    """
    base, from_fragment = split_checksum(url)
    expected = _check_hex(sha256, url) if sha256 else None
    if expected and from_fragment and expected != from_fragment:
        raise DownloadError(f"{url}: the URL fragment and the config give different SHA-256")
    expected = expected or from_fragment
    final = cached_path(base, cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if expected is None or sha256_file(final) == expected:
            return final
        log.warning("%s: cached copy has the wrong SHA-256; downloading again", final)
        final.unlink()
    part = final.with_name(final.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(base, part, timeout)
            break
        except _Retryable as err:
            if attempt == retries:
                raise DownloadError(
                    f"{base}: download failed after {retries + 1} attempts ({err}); "
                    f"{part.stat().st_size if part.exists() else 0:,} bytes kept in {part} "
                    "for the next resume"
                ) from None
            log.warning("%s: %s; resuming (attempt %d of %d)", base, err, attempt + 2, retries + 1)
            time.sleep(backoff * (attempt + 1))
    if expected is not None:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink()
            raise ChecksumMismatchError(
                f"{base}: SHA-256 mismatch: expected {expected}, got {actual} "
                "(the download was removed)"
            )
    os.replace(part, final)
    return final
