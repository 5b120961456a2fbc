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
import json
import os
import zipfile
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

from .inputs import Unit
from .split import SplitAssigner

DIGEST_SIZE = 16
PART_DIR = "parts"


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
    # The valid sequences as separate bytes when the part was just parsed in this process
    # (saves cutting them out of ``residues`` again); None when loaded from disk.
    sequences: list[bytes] | None = None

    def sequence_list(self) -> list[bytes]:
        """Every valid record's residues as bytes, in order."""
        if self.sequences is not None:
            return self.sequences
        residues, offsets = self.residues.tobytes(), self.seq_offsets.tolist()
        return [residues[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


class UnitError(Exception):
    """A unit's input cannot be read; ``str()`` is the message for the user."""


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


def part_path(work_dir: Path, unit: int, part: int) -> Path:
    return Path(work_dir) / PART_DIR / f"u{unit:06d}-p{part:05d}.npz"


def _blob(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def load_part(path: Path) -> Part:
    """Read a part written by :func:`parse_unit`."""
    with np.load(path, allow_pickle=False) as data:
        ids_blob = data["ids"].tobytes().decode("utf-8")
        return Part(
            meta=json.loads(data["meta"].tobytes()),
            ids=ids_blob.split("\n") if ids_blob else [],
            residues=data["residues"],
            seq_offsets=data["seq_offsets"],
            digests=data["digests"].tobytes(),
            taxa=data["taxa"],
            lines=data["lines"],
            inactive=data["inactive"],
            rejected=json.loads(data["rejected"].tobytes()),
            splits=data["splits"] if "splits" in data.files else None,
        )


def read_part_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["meta"].tobytes())


class _PartBuilder:
    def __init__(self, unit: Unit, index: int, start: int, start_line: int, settings):
        self.unit, self.index, self.start, self.start_line = unit, index, start, start_line
        self.columns = RecordColumns(settings.valid, track_inactive=settings.require_active)
        self.assign = settings.assign

    @property
    def records(self) -> int:
        return len(self.columns) + len(self.columns.rejected)

    def save(
        self, work_dir: Path, end: int | None, end_line: int, *, last: bool, **extra
    ) -> tuple[dict, Part]:
        """Write the part (temporary name, then rename) and return its meta and contents."""
        columns = self.columns
        sequences = columns.sequences
        residues = np.frombuffer(b"".join(sequences), dtype=np.uint8)
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, sequences), np.int64, len(sequences)), out=offsets[1:])
        blake2b = hashlib.blake2b
        digest_list = [blake2b(seq, digest_size=DIGEST_SIZE).digest() for seq in sequences]
        digests = b"".join(digest_list)
        splits = None if self.assign is None else self.assign.indices(digest_list).astype(np.int8)
        inactive = np.zeros(len(sequences), dtype=bool)
        if columns.track_inactive:
            inactive[:] = columns.inactive
        rejected = [list(row) for row in columns.rejected]
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
            "valid": len(sequences),
            **extra,
        }
        part = Part(
            meta=meta,
            ids=columns.ids,
            residues=residues,
            seq_offsets=offsets,
            digests=digests,
            taxa=np.asarray(columns.taxa, dtype=np.int64),
            lines=np.asarray(columns.lines, dtype=np.int64),
            inactive=inactive,
            rejected=rejected,
            splits=splits,
            sequences=sequences,
        )
        path = part_path(work_dir, self.unit.index, self.index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=_blob(meta),
                ids=np.frombuffer("\n".join(part.ids).encode("utf-8"), dtype=np.uint8),
                residues=residues,
                seq_offsets=offsets,
                digests=np.frombuffer(digests, dtype=np.uint8),
                taxa=part.taxa,
                lines=part.lines,
                inactive=inactive,
                rejected=_blob(rejected),
                **({} if splits is None else {"splits": splits}),
            )
        # No fsync: a part only caches work. After a kill -9 the page cache still holds it; after
        # a power loss a damaged part fails its zip CRC on loading and its unit is parsed again.
        os.replace(tmp, path)
        return meta, part


def _resume_point(work_dir: Path, unit: Unit) -> tuple[list[dict], int, int]:
    """Metas of the unit's intact parts in order, and where to go on (offset, line)."""
    metas: list[dict] = []
    while (path := part_path(work_dir, unit.index, len(metas))).exists():
        try:
            load_part(path)  # reads every member, so the zip CRCs are checked
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            for stale in path.parent.glob(f"u{unit.index:06d}-p*.npz"):
                if int(stale.stem.split("-p")[1]) >= len(metas):
                    stale.unlink()
            break
        metas.append(read_part_meta(path))
    if not metas:
        return metas, unit.start, 1
    return metas, metas[-1]["end"], metas[-1]["end_line"]


def parse_unit(path: Path, unit: Unit, work_dir: Path, settings: ParseSettings) -> dict:
    """Parse ``unit`` of ``path`` into parts; returns ``{"parts": [meta, ...]}`` or, for an
    unreadable input, ``{"error": message}`` (exceptions do not cross process pools well)."""
    with no_cyclic_gc():
        try:
            return {"parts": [meta for meta, _ in iter_unit_parts(path, unit, work_dir, settings)]}
        except UnitError as err:
            return {"error": str(err)}


def iter_unit_parts(
    path: Path, unit: Unit, work_dir: Path, settings: ParseSettings
) -> Iterator[tuple[dict, Part | None]]:
    """``(meta, part)`` for every part of ``unit`` in order, parsing what is not on disk yet.

    ``part`` is ``None`` for a part kept from an earlier run (load it with :func:`load_part`).
    An unreadable input raises :class:`UnitError` after the parts before the damage.
    """
    metas, start, line = _resume_point(work_dir, unit)
    yield from ((meta, None) for meta in metas)
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
