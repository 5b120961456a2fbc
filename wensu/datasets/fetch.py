"""Fetch registered files into the data directory with pooch (retries, SHA-256 checks, progress),
atomically: a file appears under its final name only once its hash has been checked, so an
interrupted or corrupted download never leaves a half-written file that a later run trusts.
Completed files are kept, so rerunning a fetch resumes where it stopped (file by file)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from wensu.datasets.registry import DataFile, data_set

ENV_MIRROR = "WENSU_DATA_MIRROR"  # base URL of a mirror holding the data layout


class FetchError(RuntimeError):
    """A download failed, or its bytes did not match the registry."""


def sha256_of(path: Path, decompress: bool = False) -> str:
    digest = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_ok(f: DataFile, path: Path) -> bool:
    """The stored file matches the registry: its own hash, or — for a download stored gzipped
    here (gzip output differs between implementations) — the hash of its decompressed bytes."""
    if not path.is_file():
        return False
    if sha256_of(path) == f.sha256:
        return True
    return (
        f.prepare == "gzip"
        and f.source_sha256 is not None
        and _gunzip_hash(path) == f.source_sha256
    )


def _gunzip_hash(path: Path) -> str | None:
    try:
        return sha256_of(path, decompress=True)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def _download(url: str, sha256: str, folder: Path, progress: bool) -> Path:
    """One pooch download into ``folder`` (pooch writes to a temporary name, checks the hash,
    then renames)."""
    import pooch
    import requests

    name = hashlib.sha256(url.encode()).hexdigest()[:16]
    downloader = pooch.HTTPDownloader(progressbar=progress and sys.stderr.isatty(), timeout=60)
    try:
        return Path(
            pooch.retrieve(
                url, known_hash=f"sha256:{sha256}", fname=name, path=folder, downloader=downloader
            )
        )
    except ValueError as error:  # pooch: hash mismatch
        raise FetchError(f"{url}: checksum mismatch ({str(error).splitlines()[0]})") from None
    except requests.exceptions.RequestException as error:
        raise FetchError(f"{url}: download failed ({type(error).__name__}: {error})") from None


def _install(source: Path, target: Path, prepare: str) -> None:
    """Turn a checked download into the stored file, atomically (temporary name, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        if prepare == "gzip":
            with open(source, "rb") as raw, open(tmp, "wb") as sink:
                with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=9, mtime=0) as packed:
                    shutil.copyfileobj(raw, packed, 1 << 20)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_file(f: DataFile, root: Path, mirror: str | None = None, progress: bool = True) -> str:
    """Make ``root/f.path`` present and verified; returns "present" or "fetched"."""
    target = root / f.path
    if file_ok(f, target):
        return "present"
    with tempfile.TemporaryDirectory(prefix=".wensu-fetch-", dir=_scratch(root)) as scratch:
        if mirror:  # a copy of the layout: stored bytes, stored hash
            got = _download(f"{mirror.rstrip('/')}/{f.path}", f.sha256, Path(scratch), progress)
            _install(got, target, "copy")
        elif f.url:
            got = _download(f.url, f.source_sha256 or f.sha256, Path(scratch), progress)
            _install(got, target, f.prepare)
        else:
            raise FetchError(
                f"{f.path}: derived by wensu, no public upstream file; fetch it from a mirror "
                f"(`wensu-data fetch --mirror URL` or ${ENV_MIRROR}) or place it by hand"
            )
    if not file_ok(f, target):  # the prepare step must reproduce what the registry describes
        target.unlink(missing_ok=True)
        raise FetchError(f"{f.path}: stored file does not match the registry after download")
    return "fetched"


def _scratch(root: Path) -> Path:
    """Downloads land beside the data (same file system, so the final rename is atomic)."""
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_set(
    name: str,
    root: Path,
    mirror: str | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Fetch every file of set ``name`` into ``root``; counts of present / fetched files."""
    mirror = mirror or os.environ.get(ENV_MIRROR) or None
    counts = {"present": 0, "fetched": 0}
    data = data_set(name)
    for i, f in enumerate(data.files, 1):
        outcome = fetch_file(f, root, mirror=mirror, progress=progress)
        counts[outcome] += 1
        if report and outcome == "fetched":
            report(f"[{i}/{len(data.files)}] {f.path}")
    return counts


def verify_set(name: str, root: Path) -> list[str]:
    """Files of set ``name`` under ``root`` that are missing or do not match the registry."""
    return [f.path for f in data_set(name).files if not file_ok(f, root / f.path)]
