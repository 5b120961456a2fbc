"""One record's validation: a :class:`FastaRecord` or a :class:`RejectedRecord` saying why not.

The ``reason`` of a rejected record is one of :data:`REJECT_REASONS`:

- ``sequence_before_header``: text before the first ``>`` line (kept as one rejected record);
- ``missing_id``: ``>`` followed by nothing or by whitespace;
- ``invalid_header_encoding``: header bytes that are not UTF-8;
- ``binary_data``: NUL bytes in the header or sequence;
- ``empty_sequence``: no residues (a lone terminal ``*`` counts as none);
- ``internal_stop``: ``*`` anywhere but the last position;
- ``invalid_characters``: any other byte outside the alphabet after upper-casing.

CRLF line endings, blank lines and spaces inside sequence lines are formatting and accepted;
lowercase residues are upper-cased; one terminal ``*`` is stripped. Sequences are cleaned and
checked with ``bytes.translate``, so no Python code runs per residue.
"""

from __future__ import annotations

from typing import NamedTuple

from wensu.alphabet import get_alphabet

from .fasta_headers import HeaderInfo, parse_header
from .fasta_stream import Chunk, first_word

WHITESPACE = b" \t\r\n\v\f"
UPPER_CASE = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_GAPS = b".-"

REJECT_REASONS = (
    "sequence_before_header",
    "missing_id",
    "invalid_header_encoding",
    "binary_data",
    "empty_sequence",
    "internal_stop",
    "invalid_characters",
)


def residue_bytes(allow_gaps: bool = False) -> bytes:
    """Upper-case single-character symbols of the ESM-2 alphabet that a sequence may hold.

    Gap symbols ``.`` and ``-`` belong to aligned input, so they are refused unless asked for.
    """
    symbols = {tok for tok in get_alphabet().tokens if len(tok) == 1}
    if not allow_gaps:
        symbols -= set(_GAPS.decode())
    return "".join(sorted(symbols)).encode("ascii")


class RawRecord(NamedTuple):
    """One record's bytes as found in the stream (``data`` starts after ``>``); ``orphan``
    marks text before the first header. ``offset`` is the uncompressed byte offset of ``>``,
    ``line`` its 1-based line number."""

    data: bytes
    offset: int
    line: int
    orphan: bool = False


class FastaRecord(NamedTuple):
    """A valid record: upper-case ``sequence`` bytes (terminal ``*`` stripped) and its header."""

    id: str
    sequence: bytes
    header: HeaderInfo
    line: int
    offset: int


class RejectedRecord(NamedTuple):
    """A record that failed validation, with a reason from :data:`REJECT_REASONS`."""

    id: str
    reason: str
    detail: str
    line: int
    offset: int


def _bad_characters(seq: bytes, bad: bytes) -> str:
    chars = sorted(set(bad))
    first = min(seq.find(bytes([c])) for c in chars)
    shown = "".join(chr(c) if 32 < c < 127 else f"\\x{c:02x}" for c in chars)
    return f"characters {shown!r} outside the alphabet, first at residue {first + 1}"


def check_record(raw: RawRecord, valid: bytes) -> FastaRecord | RejectedRecord:
    """Validate one raw record against the allowed upper-case symbols ``valid``."""
    if raw.orphan:
        return RejectedRecord(
            "", "sequence_before_header", "text before the first '>' header", raw.line, raw.offset
        )
    return check_chunk(Chunk(b">" + raw.data, raw.offset, raw.line), valid)[0]


def check_chunk(chunk: Chunk, valid: bytes) -> list[FastaRecord | RejectedRecord]:
    """Split a chunk of whole records and validate each: the valid record, or why not.

    One tight loop per record with bytes methods only (``split``, ``translate``) -- the work
    per residue happens in C; this is several times faster than per-line parsing.
    """
    out: list[FastaRecord | RejectedRecord] = []
    append = out.append
    next_offset, next_line = chunk.offset, chunk.line
    for data in chunk.data[1:].split(b"\n>"):
        offset, line = next_offset, next_line
        next_offset += len(data) + 2
        next_line += data.count(b"\n") + 1
        newline = data.find(b"\n")
        head, body = (data, b"") if newline < 0 else (data[:newline], data[newline + 1 :])
        if head[-1:] == b"\r":
            head = head[:-1]
        if b"\x00" in head:
            append(RejectedRecord(first_word(head), "binary_data", "NUL byte in header",
                                  line, offset))  # fmt: skip
            continue
        try:
            info = parse_header(head.decode())
        except UnicodeDecodeError as err:
            byte, column = head[err.start], err.start + 2
            detail = f"header is not UTF-8 (byte 0x{byte:02x} at column {column})"
            append(RejectedRecord(first_word(head), "invalid_header_encoding", detail,
                                  line, offset))  # fmt: skip
            continue
        seq = body.translate(UPPER_CASE, WHITESPACE)
        if seq[-1:] == b"*":
            seq = seq[:-1]
        if not info.id:
            append(RejectedRecord("", "missing_id", "'>' line has no identifier", line, offset))
        elif not seq:
            append(RejectedRecord(info.id, "empty_sequence", "no residues", line, offset))
        elif seq.translate(None, valid):
            append(RejectedRecord(info.id, *sequence_problem(seq, valid), line, offset))
        else:
            append(FastaRecord(info.id, seq, info, line, offset))
    return out


def sequence_problem(seq: bytes, valid: bytes) -> tuple[str, str]:
    """``(reason, detail)`` for a cleaned sequence holding bytes outside ``valid``."""
    bad = seq.translate(None, valid)
    if b"\x00" in bad:
        return "binary_data", "NUL byte in sequence"
    if b"*" in bad:
        return "internal_stop", f"'*' inside at residue {seq.find(b'*') + 1}"
    return "invalid_characters", _bad_characters(seq, bad)
