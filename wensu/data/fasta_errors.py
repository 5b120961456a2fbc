"""Errors raised while reading FASTA input; all are ``ValueError`` naming the file and place."""

from __future__ import annotations

from pathlib import Path


class FastaError(ValueError):
    """A FASTA input cannot be read as such; the message names the file and the position."""


class NotFastaError(FastaError):
    """The file is not FASTA text (binary data before the first header)."""


class TruncatedFastaError(FastaError):
    """The stream ends early or is corrupt (typically a cut-off ``.gz`` download).

    ``offset``/``line``: uncompressed byte offset and line reached when the damage was found;
    ``partial_offset``/``partial_line``/``partial_id``: the record that was being read then
    (``None`` when the damage fell exactly between records).
    """

    def __init__(self, path: Path, message: str, offset: int, line: int, partial: tuple | None):
        self.path, self.offset, self.line = path, offset, line
        self.partial_offset, self.partial_line, self.partial_id = partial or (None, None, None)
        super().__init__(
            f"{path}: {message} at uncompressed byte offset {offset:,} (line {line:,}); "
            "the file is incomplete or damaged"
        )


class InvalidRecordError(FastaError):
    """A record failed validation (raised by ``read_fasta`` with ``errors="raise"``)."""
