"""Bulk FASTA parsing into columns: the fast path for preprocessing many millions of records.

:class:`RecordColumns` takes whole :class:`~wensu.data.fasta_stream.Chunk` s and keeps the
valid records as parallel lists (id, cleaned sequence, taxon, line) and the rejected ones as
:class:`~wensu.data.fasta_records.RejectedRecord` s. The decisions are exactly those of
:func:`~wensu.data.fasta_records.check_chunk` (same reasons, details, lines and offsets), but
no :class:`~wensu.data.fasta_headers.HeaderInfo` or record tuple is built per record, and
the alphabet check runs once over each chunk's joined residues: only a chunk that holds a bad
byte is checked record by record.
"""

from __future__ import annotations

from .fasta_headers import header_id_taxon, parse_header
from .fasta_records import UPPER_CASE, WHITESPACE, RejectedRecord, sequence_problem
from .fasta_stream import Chunk, first_word

_NO_HEADER = "text before the first '>' header"


def is_inactive(header: str) -> bool:
    """True for a UniParc header that says ``status=inactive``."""
    info = parse_header(header)
    return info.format == "uniparc" and info.fields().get("status") == "inactive"


class RecordColumns:
    """Valid records as columns, plus the rejected ones, in input order.

    ``ids``/``sequences``/``taxa`` (-1 = unknown)/``lines`` hold one entry per valid record;
    with ``track_inactive``, ``inactive`` says which UniParc records are marked inactive.
    """

    def __init__(self, valid: bytes, *, track_inactive: bool = False):
        self.valid = valid
        self.track_inactive = track_inactive
        self.ids: list[str] = []
        self.sequences: list[bytes] = []
        self.taxa: list[int] = []
        self.lines: list[int] = []
        self.inactive: list[bool] = []
        self.rejected: list[RejectedRecord] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add_chunk(self, chunk: Chunk) -> None:
        """Parse and validate the records of one chunk (or record its orphan text)."""
        if chunk.orphan:
            reject = RejectedRecord(
                "", "sequence_before_header", _NO_HEADER, chunk.line, chunk.offset
            )
            self.rejected.append(reject)
            return
        first = len(self.ids)
        ids, sequences, taxa, lines = self.ids, self.sequences, self.taxa, self.lines
        rejected, headers, offsets = self.rejected, [], []
        track = self.track_inactive
        offset, line = chunk.offset, chunk.line
        records = chunk.data.split(b"\n>")
        records[0] = records[0][1:]  # the leading '>' (cheaper than copying the whole chunk)
        has_nul = b"\x00" in chunk.data  # NULs in sequences are caught by the alphabet check
        for data in records:
            record_offset, record_line = offset, line
            offset += len(data) + 2
            line += data.count(b"\n") + 1
            head, _, body = data.partition(b"\n")
            if head[-1:] == b"\r":
                head = head[:-1]
            if has_nul and b"\x00" in head:
                reject = RejectedRecord(
                    first_word(head),
                    "binary_data",
                    "NUL byte in header",
                    record_line,
                    record_offset,
                )
                rejected.append(reject)
                continue
            try:
                text = head.decode()
            except UnicodeDecodeError as err:
                detail = (
                    f"header is not UTF-8 (byte 0x{head[err.start]:02x} at column {err.start + 2})"
                )
                reject = RejectedRecord(
                    first_word(head), "invalid_header_encoding", detail, record_line, record_offset
                )
                rejected.append(reject)
                continue
            record_id, taxon = header_id_taxon(text) if text else ("", -1)
            sequence = body.translate(UPPER_CASE, WHITESPACE)
            if sequence[-1:] == b"*":
                sequence = sequence[:-1]
            if not record_id:
                reject = RejectedRecord(
                    "", "missing_id", "'>' line has no identifier", record_line, record_offset
                )
                rejected.append(reject)
            elif not sequence:
                reject = RejectedRecord(
                    record_id, "empty_sequence", "no residues", record_line, record_offset
                )
                rejected.append(reject)
            else:
                ids.append(record_id)
                sequences.append(sequence)
                taxa.append(taxon)
                lines.append(record_line)
                offsets.append(record_offset)
                if track:
                    headers.append(text)
        if track:
            self.inactive.extend(map(is_inactive, headers))
        if b"".join(sequences[first:]).translate(None, self.valid):
            self._reject_invalid(first, offsets)

    def _reject_invalid(self, first: int, offsets: list[int]) -> None:
        """Move the records from ``first`` on (at byte ``offsets``) whose residues leave the
        alphabet to ``rejected``."""
        valid = self.valid
        columns = [self.ids, self.sequences, self.taxa, self.lines]
        if self.track_inactive:
            columns.append(self.inactive)
        rows = list(zip(*(column[first:] for column in columns), offsets, strict=True))
        for column in columns:
            del column[first:]
        for *values, offset in rows:
            record_id, sequence, _, line = values[:4]
            if sequence.translate(None, valid):
                reason, detail = sequence_problem(sequence, valid)
                self.rejected.append(RejectedRecord(record_id, reason, detail, line, offset))
            else:
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
        self.rejected.sort(key=lambda reject: reject.offset)
