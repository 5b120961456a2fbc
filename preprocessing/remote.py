"""Inputs and outputs on fsspec paths (``s3://``, ``gs://``, ``memory://`` ...).

The pipeline's tasks read byte ranges and memory-map parts, which wants a POSIX file system, so
a remote input is first copied into the download cache (under a name made from its URL, reused
while its size is unchanged) and a remote output is built in a local staging directory, then
uploaded once the dataset is complete (manifest last, so a reader never sees a manifest
without its shards). ``pip install s3fs`` (or gcsfs, adlfs) gives fsspec the cloud protocols.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .errors import InputError, OutputError

LOCAL_PROTOCOLS = ("file", "local")
DOWNLOAD_PROTOCOLS = ("http", "https")  # fetched by wensu.data.download (checksums, retries)


def is_remote(spec: str) -> bool:
    """True for ``protocol://...`` paths that fsspec handles (not http(s) nor local files)."""
    protocol, sep, _ = str(spec).partition("://")
    return bool(sep) and protocol not in LOCAL_PROTOCOLS + DOWNLOAD_PROTOCOLS


def _filesystem(spec: str, error):
    try:
        import fsspec
    except ImportError:
        raise error(f"{spec}: remote paths need fsspec: pip install 'wensu[ray]'") from None
    try:
        return fsspec.core.url_to_fs(spec)
    except (ImportError, ValueError) as err:
        raise error(f"{spec}: no file system for this path ({err})") from None


def _cache_name(spec: str) -> str:
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def fetch_inputs(spec: str, cache_dir: Path) -> list[tuple[str, str]]:
    """(local copy, URL) of the FASTA file(s) at ``spec`` (a file, or a folder: its files,
    sorted)."""
    fs, path = _filesystem(spec, InputError)
    try:
        if fs.isdir(path):
            names = sorted(p for p in fs.find(path) if not fs.isdir(p))
        elif fs.exists(path):
            names = [path]
        else:
            raise InputError(f"{spec}: input not found")
        local = []
        for name in names:
            url = fs.unstrip_protocol(name)
            target = Path(cache_dir) / "remote" / _cache_name(url) / Path(name).name
            size = fs.size(name)
            if not target.exists() or target.stat().st_size != size:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                fs.get(name, str(tmp))
                tmp.replace(target)
            local.append((str(target), url))
        return local
    except OSError as err:
        raise InputError(f"{spec}: cannot read ({err.strerror or err})") from None


def staging_dir(spec: str, cache_dir: Path) -> Path:
    """Where a remote output is built before upload (kept across runs, so a rerun resumes)."""
    return Path(cache_dir) / "outputs" / _cache_name(spec)


def upload_output(local: Path, spec: str, names: list[str]) -> None:
    """Upload the dataset in ``local`` to ``spec``: the shards and reports, the manifest last."""
    fs, root = _filesystem(spec, OutputError)
    try:
        for name in names:
            fs.makedirs(f"{root}/{Path(name).parent}".rstrip("/."), exist_ok=True)
            fs.put(str(local / name), f"{root}/{name}")
    except OSError as err:
        raise OutputError(f"{spec}: cannot upload the dataset ({err.strerror or err})") from None


def remove_staging(local: Path) -> None:
    shutil.rmtree(local, ignore_errors=True)
