"""Streaming FASTA reading: block-wise bytes parsing, header fields, per-record validation.

This module is the public face of the FASTA reader; the work is done in

- :mod:`wensu.data.fasta_stream`: decompressed blocks and chunks of whole records;
- :mod:`wensu.data.fasta_headers`: header formats, ids and taxa;
- :mod:`wensu.data.fasta_records`: validation of one record (reasons in :data:`REJECT_REASONS`);
- :mod:`wensu.data.fasta_columns`: bulk parsing of chunks into columns (preprocessing);
- :mod:`wensu.data.fasta_errors`: the ``ValueError`` family raised for unreadable input.

Every public name of those modules can be imported from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .fasta_columns import RecordColumns, is_inactive
from .fasta_errors import FastaError, InvalidRecordError, NotFastaError, TruncatedFastaError
from .fasta_headers import HeaderInfo, header_id_taxon, parse_header
from .fasta_records import (
    REJECT_REASONS,
    UPPER_CASE,
    WHITESPACE,
    FastaRecord,
    RawRecord,
    RejectedRecord,
    check_chunk,
    check_record,
    residue_bytes,
    sequence_problem,
)
from .fasta_stream import (
    DEFAULT_BLOCK_SIZE,
    GZIP_MAGIC,
    Chunk,
    first_word,
    is_gzip,
    iter_blocks,
    iter_chunks,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "GZIP_MAGIC",
    "REJECT_REASONS",
    "UPPER_CASE",
    "WHITESPACE",
    "Chunk",
    "FastaError",
    "FastaRecord",
    "HeaderInfo",
    "InvalidRecordError",
    "NotFastaError",
    "RawRecord",
    "RecordColumns",
    "RejectedRecord",
    "TruncatedFastaError",
    "check_chunk",
    "check_record",
    "first_word",
    "header_id_taxon",
    "is_gzip",
    "is_inactive",
    "iter_blocks",
    "iter_chunks",
    "iter_raw_records",
    "parse_header",
    "read_fasta",
    "residue_bytes",
    "sequence_problem",
]


def iter_raw_records(
    path: Path,
    start: int = 0,
    end: int | None = None,
    *,
    start_line: int = 1,
    block_size: int = 0,
) -> Iterator[RawRecord]:
    """Yield the records of ``path`` (or of the byte range ``[start, end)``) one by one, in
    file order, without validating them."""
    for chunk in iter_chunks(path, start, end, start_line=start_line, block_size=block_size):
        if chunk.orphan:
            yield RawRecord(chunk.data, chunk.offset, chunk.line, orphan=True)
            continue
        pos, line = chunk.offset, chunk.line
        for data in chunk.data[1:].split(b"\n>"):
            yield RawRecord(data, pos, line)
            pos += len(data) + 2
            line += data.count(b"\n") + 1


def read_fasta(
    path: Path,
    *,
    errors: str = "raise",
    allow_gaps: bool = False,
    rejected: list[RejectedRecord] | None = None,
) -> Iterator[FastaRecord]:
    """Stream the valid records of a FASTA file (plain or gzip).

    ``errors="raise"`` raises :class:`InvalidRecordError` naming the file, line, id and reason
    at the first invalid record; ``errors="skip"`` skips it and appends it to ``rejected`` (so
    nothing is dropped unseen). Duplicate ids are not checked here (that needs the whole input).
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    valid = residue_bytes(allow_gaps)
    for chunk in iter_chunks(Path(path)):
        if chunk.orphan:
            results = [check_record(RawRecord(chunk.data, chunk.offset, chunk.line, True), valid)]
        else:
            results = check_chunk(chunk, valid)
        for checked in results:
            if isinstance(checked, FastaRecord):
                yield checked
            elif errors == "raise":
                raise InvalidRecordError(
                    f"{path}: line {checked.line}: record {checked.id or '(no id)'!r} is invalid: "
                    f"{checked.reason} ({checked.detail})"
                )
            elif rejected is not None:
                rejected.append(checked)
