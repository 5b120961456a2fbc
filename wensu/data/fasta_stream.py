"""Streaming FASTA bytes: decompressed blocks, then chunks of whole records.

Files are read in large blocks (gzip detected by its magic bytes, whatever the name; ISA-L
inflates when installed) and cut at the last ``b"\\n>"`` of each block, so a :class:`Chunk`
always holds whole records. Nothing is loaded whole: memory is one block plus the longest
record. A file that is binary before its first header raises :class:`NotFastaError`; a
truncated or corrupt gzip stream raises :class:`TruncatedFastaError` after every complete
chunk before the damage has been yielded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from .fasta_errors import NotFastaError, TruncatedFastaError

try:  # ISA-L inflates gzip 2-3x faster than zlib, with the same API; optional.
    from isal import isal_zlib as _inflate_module
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_module = zlib

GZIP_MAGIC = b"\x1f\x8b"
# 1 MiB blocks stay in the CPU cache between inflating, splitting and cleaning them (measured
# ~7% faster than 4 MiB on the UniProt proteomes).
DEFAULT_BLOCK_SIZE = 1 << 20
_UTF8_BOM = b"\xef\xbb\xbf"
# Bounds the output of one inflate call, so a gzip bomb cannot take all memory at once.
_MAX_INFLATE = 1 << 24


def first_word(head: bytes) -> str:
    """The id-like first word of raw header bytes, for messages about unreadable records."""
    words = head.decode("utf-8", "backslashreplace").split(None, 1)
    return words[0].replace("\x00", "\\x00") if words and not head[:1].isspace() else ""


class _StreamDamage(Exception):
    """Internal: the decompressed stream broke; converted to TruncatedFastaError by the caller."""


def is_gzip(path: Path) -> bool:
    """True if the file starts with the gzip magic bytes (the name does not matter)."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _gzip_blocks(handle, block_size: int) -> Iterator[bytes]:
    inflate = _inflate_module  # looked up per call, so tests can swap in zlib
    inflater = inflate.decompressobj(31)
    pending = b""
    while True:
        chunk = pending or handle.read(block_size)
        pending = b""
        if not chunk:
            raise _StreamDamage("gzip stream ends before its end marker (truncated file)")
        try:
            out = inflater.decompress(chunk, _MAX_INFLATE)
            while inflater.unconsumed_tail:
                if out:
                    yield out
                out = inflater.decompress(inflater.unconsumed_tail, _MAX_INFLATE)
        except (zlib.error, inflate.error) as err:
            raise _StreamDamage(f"corrupt gzip data ({err})") from None
        if out:
            yield out
        if not inflater.eof:
            continue
        rest = inflater.unused_data
        if len(rest) < len(GZIP_MAGIC):
            rest += handle.read(block_size)
        if rest.startswith(GZIP_MAGIC):  # concatenated members, as `cat a.gz b.gz` makes
            inflater, pending = inflate.decompressobj(31), rest
            continue
        while rest:  # only NUL padding may follow the last member
            if rest.strip(b"\x00"):
                raise _StreamDamage("trailing data after the end of the gzip stream")
            rest = handle.read(block_size)
        return


def iter_blocks(path: Path, start: int = 0, end: int | None = None, block_size: int = 0):
    """Decompressed bytes of ``path`` from uncompressed offset ``start`` to ``end`` (exclusive).

    Plain files seek; gzip streams are inflated from the beginning and the bytes before
    ``start`` dropped. Damage raises an internal error that :func:`iter_raw_records` reports.
    """
    block_size = block_size or DEFAULT_BLOCK_SIZE
    with open(path, "rb") as handle:
        if handle.read(2) == GZIP_MAGIC:
            handle.seek(0)
            skip, remaining = start, None if end is None else end - start
            for block in _gzip_blocks(handle, block_size // 4):
                if skip:
                    if len(block) <= skip:
                        skip -= len(block)
                        continue
                    block, skip = block[skip:], 0
                if remaining is not None:
                    block = block[:remaining]
                    remaining -= len(block)
                if block:
                    yield block
                if remaining == 0:
                    return
            return
        handle.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            block = handle.read(block_size if remaining is None else min(block_size, remaining))
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block


def _split_preamble(path: Path, buf: bytes, final: bool) -> tuple[bytes | None, bytes]:
    """At the start of a file: (text before the first header or None if undecided, rest)."""
    if buf.startswith(_UTF8_BOM):
        buf = buf[len(_UTF8_BOM) :]
    if buf.startswith(b">"):
        return b"", buf
    cut = buf.find(b"\n>")
    nul = buf.find(b"\x00", 0, cut if cut >= 0 else len(buf))
    if nul >= 0:
        raise NotFastaError(
            f"{path}: not a FASTA file: binary data (NUL byte at byte offset {nul}) "
            "before the first '>' header"
        )
    if cut < 0:
        return (buf, b"") if final else (None, buf)
    return buf[: cut + 1], buf[cut + 1 :]


class Chunk(NamedTuple):
    """Whole records as read (``data`` starts with ``>``; the newline before the next chunk's
    ``>`` is not included), or with ``orphan`` the text before the first header."""

    data: bytes
    offset: int
    line: int
    orphan: bool = False


def iter_chunks(
    path: Path,
    start: int = 0,
    end: int | None = None,
    *,
    start_line: int = 1,
    block_size: int = 0,
) -> Iterator[Chunk]:
    """Chunks of whole records of ``path`` (or of the byte range ``[start, end)``, which must
    begin at a record) in file order, about one read block each."""
    path = Path(path)
    buf = b""
    pos, line = start, start_line
    at_file_start = start == 0
    blocks = iter_blocks(path, start, end, block_size)
    while True:
        try:
            block = next(blocks, None)
        except _StreamDamage as err:
            partial = (pos, line, first_word(buf[1:].split(b"\n", 1)[0])) if buf else None
            offset = pos + len(buf)
            raise TruncatedFastaError(
                path, str(err), offset, line + buf.count(b"\n"), partial
            ) from None
        final = block is None
        if not final:
            buf = buf + block if buf else block
        if at_file_start:
            bom = len(_UTF8_BOM) if buf.startswith(_UTF8_BOM) else 0
            preamble, rest = _split_preamble(path, buf, final)
            if preamble is None:
                continue
            at_file_start = False
            if preamble.strip():
                yield Chunk(preamble, pos, line, orphan=True)
            pos += bom + len(preamble)
            line += preamble.count(b"\n")
            buf = rest
        if final:
            if buf:
                yield Chunk(buf, pos, line)
            return
        cut = buf.rfind(b"\n>")
        if cut < 0:
            continue
        yield Chunk(buf[:cut], pos, line)
        pos += cut + 1
        line += buf.count(b"\n", 0, cut) + 1
        buf = buf[cut + 1 :]
