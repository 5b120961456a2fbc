"""Turn the ``input`` setting into an ordered list of files, and the files into parse units.

Order is the order given; a directory contributes its FASTA files recursively in sorted path
order. The input order is what "first occurrence wins" in deduplication refers to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wensu.data.download import DownloadError, download, is_url
from wensu.data.fasta import GZIP_MAGIC

from .errors import InputError

log = logging.getLogger(__name__)

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fsa", ".pep", ".mpfa", ".aa")
_SCAN_WINDOW = 1 << 16


@dataclass(frozen=True)
class InputFile:
    """One input file: resolved ``path``, byte ``size``, ``gzip`` by magic, ``url`` if fetched."""

    path: Path
    size: int
    gzip: bool
    url: str | None = None

    def describe(self, sha256: str) -> dict:
        """The manifest's entry for this input."""
        entry = {"path": str(self.path), "bytes": self.size, "sha256": sha256}
        if self.url:
            entry["url"] = self.url
        return entry


@dataclass(frozen=True)
class Unit:
    """A contiguous byte range of one input parsed by one worker task (``end`` None = to EOF)."""

    index: int
    file_index: int
    start: int
    end: int | None


def is_fasta_name(path: Path) -> bool:
    """True for FASTA file names, optionally ``.gz``: ``x.fasta``, ``x.faa.gz``, ..."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(FASTA_SUFFIXES)


def _not_regular(spec: str | Path) -> InputError:
    """A pipe, FIFO or device is refused before it is opened (opening a FIFO blocks)."""
    return InputError(
        f"{spec}: not a regular file (a pipe, FIFO or device can be read only once; "
        "wensu-preprocess reads each input twice, to plan chunks and to parse them): save it "
        "to a file first, e.g. `cat > input.fasta`"
    )


def _directory_files(directory: Path) -> list[Path]:
    named = [p for p in directory.rglob("*") if is_fasta_name(p) and not p.is_dir()]
    special = [p for p in named if not p.is_file()]
    if special:
        raise _not_regular(special[0])
    found = sorted(named)
    if not found:
        raise InputError(
            f"{directory}: directory holds no FASTA files (looked for {', '.join(FASTA_SUFFIXES)}"
            " and the same with .gz)"
        )
    return found


def _file(path: Path, url: str | None = None) -> InputFile:
    try:
        with open(path, "rb") as handle:
            gzip = handle.read(2) == GZIP_MAGIC
        size = path.stat().st_size
    except OSError as err:
        raise InputError(f"{path}: cannot read input ({err.strerror or err})") from None
    return InputFile(path=path, size=size, gzip=gzip, url=url)


def resolve_inputs(
    specs: Sequence[str],
    *,
    cache_dir: Path,
    checksums: dict[str, str] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
) -> list[InputFile]:
    """Files, directories and URLs -> de-duplicated ordered input files."""
    checksums = checksums or {}
    files: list[InputFile] = []
    seen: set[Path] = set()
    for spec in specs:
        if is_url(spec):
            base = spec.partition("#")[0]
            expected = checksums.get(base) or checksums.get(Path(base).name)
            try:
                fetched = download(
                    spec, cache_dir, sha256=expected, retries=retries, timeout=timeout
                )
            except DownloadError as err:
                raise InputError(str(err)) from None
            candidates = [(fetched, base)]
        else:
            path = Path(spec).expanduser()
            if not path.exists():
                raise InputError(f"{spec}: input not found")
            if not path.is_dir() and not path.is_file():
                raise _not_regular(spec)
            paths = _directory_files(path) if path.is_dir() else [path]
            candidates = [(p, None) for p in paths]
        for path, url in candidates:
            resolved = path.resolve()
            if resolved in seen:
                log.warning("%s: listed more than once; read once", resolved)
                continue
            seen.add(resolved)
            files.append(_file(resolved, url))
    if not files:
        raise InputError("no input files given")
    return files


def _next_record_start(handle, position: int, size: int) -> int:
    """First offset >= position where a line starts with '>' (``size`` if none)."""
    handle.seek(max(position - 1, 0))
    carry = b""
    base = max(position - 1, 0)
    while True:
        block = handle.read(_SCAN_WINDOW)
        if not block:
            return size
        window = carry + block
        found = window.find(b"\n>")
        if found >= 0:
            return base - len(carry) + found + 1
        carry = window[-1:]
        base += len(block)


def plan_units(files: Sequence[InputFile], chunk_bytes: int) -> list[Unit]:
    """Cut plain files larger than ``chunk_bytes`` at record starts; gzip files are one unit
    each (a gzip stream cannot be entered in the middle)."""
    units: list[Unit] = []
    for file_index, item in enumerate(files):
        if item.gzip or item.size <= chunk_bytes:
            units.append(Unit(len(units), file_index, 0, None))
            continue
        starts = [0]
        with open(item.path, "rb") as handle:
            while starts[-1] + chunk_bytes < item.size:
                start = _next_record_start(handle, starts[-1] + chunk_bytes, item.size)
                if start >= item.size:
                    break
                starts.append(start)
        ends = [*starts[1:], None]
        for start, end in zip(starts, ends, strict=True):
            units.append(Unit(len(units), file_index, start, end))
    return units
