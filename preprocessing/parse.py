"""Parse + validate one unit of input into "parts" on disk (the worker's job; the unit of resume).

A part holds the records of a contiguous byte range: the valid ones (ids, cleaned residues,
BLAKE2b-128 digests, taxa, lines) and the rejected ones with their reasons. Parts are cut at the
first record that starts ``chunk_bytes`` or more after the part's start, so their boundaries
depend only on the input and ``chunk_bytes`` (never on the worker count). Each part is written
to a temporary name and renamed, so an existing part is complete; a rerun keeps the parts of a
unit and goes on from the end of the last one.

Line numbers are relative to the unit's start (line 1); the merge makes them absolute.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wensu.data.fasta import (
    FastaError,
    RecordColumns,
    RejectedRecord,
    TruncatedFastaError,
    iter_chunks,
)

from .errors import write_failure
from .inputs import Unit
from .parts import PartReader, id_digests, key_table, part_dir, write_part
from .split import SplitAssigner

DIGEST_SIZE = 16


@dataclass(frozen=True)
class ParseSettings:
    """What a worker needs: allowed residue bytes, part size and the policies it applies."""

    valid: bytes
    chunk_bytes: int
    on_truncated: str
    require_active: bool
    # Without clustering a record's split key is its own digest, so workers assign splits.
    assign: SplitAssigner | None = None


@dataclass(frozen=True)
class Part:
    """A loaded part: arrays of its valid records and its rejected rows (input order)."""

    meta: dict
    ids: list[str]
    residues: np.ndarray
    seq_offsets: np.ndarray
    digests: bytes
    taxa: np.ndarray
    lines: np.ndarray
    inactive: np.ndarray
    rejected: list[list]
    # Index into SPLIT_NAMES of each valid record by its own digest (None: not assigned).
    splits: np.ndarray | None = None

    def sequence_list(self) -> list[bytes]:
        """Every valid record's residues as bytes, in order."""
        residues, offsets = self.residues.tobytes(), self.seq_offsets.tolist()
        return [residues[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


class UnitError(Exception):
    """A unit's input cannot be read; ``str()`` is the message for the user."""


class PartWriteError(Exception):
    """A parsed part cannot be written (disk full...); ``str()`` is the message for the user.
    Not an ``OSError``, so it is never taken for a failure to read the input."""


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (parsing and merging make millions of small objects
    and no reference cycles, so its scans would only cost time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_part(directory: Path) -> Part:
    """Read a whole part written by :func:`parse_unit` into memory."""
    reader = PartReader(directory)
    column = reader.column
    splits = column("splits")
    return Part(
        meta=reader.meta,
        ids=reader.all_ids(),
        residues=np.asarray(column("residues")),
        seq_offsets=np.asarray(column("seq_offsets")),
        digests=np.asarray(column("digests")).tobytes(),
        taxa=np.asarray(column("taxa")),
        lines=np.asarray(column("lines")),
        inactive=np.asarray(column("inactive")),
        rejected=reader.meta["rejected"],
        splits=np.asarray(splits) if splits.size == len(column("taxa")) else None,
    )


class _PartBuilder:
    def __init__(self, unit: Unit, index: int, start: int, start_line: int, settings):
        self.unit, self.index, self.start, self.start_line = unit, index, start, start_line
        self.columns = RecordColumns(settings.valid, track_inactive=settings.require_active)
        self.assign = settings.assign

    @property
    def records(self) -> int:
        return len(self.columns) + len(self.columns.rejected)

    def save(self, work_dir: Path, end: int | None, end_line: int, *, last: bool, **extra) -> dict:
        """Write the part (columns and key tables; temporary name, then rename); its meta."""
        columns = self.columns
        sequences = columns.sequences
        count = len(sequences)
        residues = np.frombuffer(b"".join(sequences), dtype=np.uint8)
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, sequences), np.int64, count), out=offsets[1:])
        blake2b = hashlib.blake2b
        digest_list = [blake2b(seq, digest_size=DIGEST_SIZE).digest() for seq in sequences]
        digests = b"".join(digest_list)
        splits = np.zeros(0, dtype=np.int8)
        if self.assign is not None:
            splits = self.assign.indices(digest_list).astype(np.int8)
        inactive = np.zeros(count, dtype=bool)
        if columns.track_inactive:
            inactive[:] = columns.inactive
        id_blob = "\n".join(columns.ids).encode("utf-8")
        id_array = np.frombuffer(id_blob, dtype=np.uint8)
        # Id i is id_blob[offsets[i] : offsets[i + 1] - 1] (the "\n" after it left out).
        id_offsets = np.concatenate(([0], np.flatnonzero(id_array == 10) + 1, [len(id_blob) + 1]))
        id_offsets = id_offsets[: count + 1].astype(np.int64)
        dkeys, dbuckets = key_table(digests)
        ikeys, ibuckets = key_table(id_digests(id_blob, id_offsets))
        meta = {
            "unit": self.unit.index,
            "file_index": self.unit.file_index,
            "part": self.index,
            "start": self.start,
            "start_line": self.start_line,
            "end": end,
            "end_line": end_line,
            "last": last,
            "records": self.records,
            "valid": count,
            "rejected": [list(row) for row in columns.rejected],
            **extra,
        }
        arrays = {
            "residues": residues,
            "seq_offsets": offsets,
            "id_blob": id_array,
            "id_offsets": id_offsets,
            "digests": np.frombuffer(digests, dtype=np.uint8),
            "taxa": np.asarray(columns.taxa, dtype=np.int64),
            "lines": np.asarray(columns.lines, dtype=np.int64),
            "inactive": inactive,
            "splits": splits,
            "dkeys": dkeys,
            "dbuckets": dbuckets,
            "ikeys": ikeys,
            "ibuckets": ibuckets,
        }
        stem = part_dir(work_dir, self.unit.index, self.index)
        try:
            write_part(stem, meta, arrays)
        except OSError as err:
            raise PartWriteError(write_failure(err, stem.with_suffix(".bin"))) from None
        return meta


def _resume_point(work_dir: Path, unit: Unit) -> tuple[list[dict], int, int]:
    """Metas of the unit's intact parts in order, and where to go on (offset, line)."""
    metas: list[dict] = []
    while (path := part_dir(work_dir, unit.index, len(metas))).with_suffix(".json").exists():
        try:
            reader = PartReader(path)
            intact = reader.intact()
        except (OSError, ValueError):
            intact = False
        if not intact:
            for stale in path.parent.glob(f"u{unit.index:06d}-p*"):
                if int(stale.name.split("-p")[1][:5]) >= len(metas):
                    stale.unlink(missing_ok=True)
            break
        metas.append(reader.meta)
    if not metas:
        return metas, unit.start, 1
    return metas, metas[-1]["end"], metas[-1]["end_line"]


def parse_unit(path: Path, unit: Unit, work_dir: Path, settings: ParseSettings) -> dict:
    """Parse ``unit`` of ``path`` into parts; returns ``{"parts": [meta, ...]}`` or, for an
    unreadable input, ``{"error": message}`` (exceptions do not cross process pools well)."""
    with no_cyclic_gc():
        try:
            return {"parts": list(iter_unit_parts(path, unit, work_dir, settings))}
        except UnitError as err:
            return {"error": str(err)}
        except PartWriteError as err:
            return {"error": str(err), "output": True}


def iter_unit_parts(
    path: Path, unit: Unit, work_dir: Path, settings: ParseSettings
) -> Iterator[dict]:
    """The meta of every part of ``unit`` in order, parsing what is not on disk yet (parts
    kept from an earlier run are reused). An unreadable input raises :class:`UnitError` after
    the parts before the damage."""
    metas, start, line = _resume_point(work_dir, unit)
    yield from metas
    if metas and metas[-1]["last"]:
        return
    index = len(metas)
    builder = _PartBuilder(unit, index, start, line, settings)
    add_chunk = builder.columns.add_chunk
    limit = start + settings.chunk_bytes
    next_line, position = line, start
    try:
        for chunk in iter_chunks(path, start, unit.end, start_line=line):
            if chunk.offset >= limit and builder.records:
                size = chunk.offset - builder.start
                yield builder.save(work_dir, chunk.offset, chunk.line, last=False, bytes=size)
                index += 1
                builder = _PartBuilder(unit, index, chunk.offset, chunk.line, settings)
                add_chunk = builder.columns.add_chunk
                limit = chunk.offset + settings.chunk_bytes
            add_chunk(chunk)
            # Where this unit's text ends so far, and the line there (the next unit's base).
            position = chunk.offset + len(chunk.data)
            next_line = chunk.line + chunk.data.count(b"\n")
    except TruncatedFastaError as err:
        if settings.on_truncated != "keep":
            raise UnitError(str(err)) from None
        if err.partial_offset is not None:
            cut = RejectedRecord(
                err.partial_id or "",
                "truncated_input",
                "record cut off by the damage",
                err.partial_line,
                err.partial_offset,
            )
            builder.columns.rejected.append(cut)
        truncated = {"offset": err.offset, "line": err.line, "message": str(err)}
        size = err.offset - builder.start
        yield builder.save(work_dir, None, err.line, last=True, truncated=truncated, bytes=size)
        return
    except FastaError as err:
        raise UnitError(str(err)) from None
    except OSError as err:
        raise UnitError(f"{path}: cannot read ({err.strerror or err})") from None
    size = (position if unit.end is None else unit.end) - builder.start
    yield builder.save(work_dir, unit.end, next_line, last=True, bytes=size)
