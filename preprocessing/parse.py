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

import gc
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wensu.data.fasta import (
    FastaError,
    FastaRecord,
    RawRecord,
    TruncatedFastaError,
    check_chunk,
    check_record,
    iter_chunks,
)

from .inputs import Unit

DIGEST_SIZE = 16
PART_DIR = "parts"


@dataclass(frozen=True)
class ParseSettings:
    """What a worker needs: allowed residue bytes, part size and the policies it applies."""

    valid: bytes
    chunk_bytes: int
    on_truncated: str
    require_active: bool


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
        )


def read_part_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(data["meta"].tobytes())


class _PartBuilder:
    def __init__(self, unit: Unit, index: int, start: int, start_line: int):
        self.unit, self.index, self.start, self.start_line = unit, index, start, start_line
        self.ids: list[str] = []
        self.seqs: list[bytes] = []
        self.digests: list[bytes] = []
        self.taxa: list[int] = []
        self.lines: list[int] = []
        self.inactive: list[bool] = []
        self.rejected: list[list] = []

    @property
    def records(self) -> int:
        return len(self.ids) + len(self.rejected)

    def save(self, work_dir: Path, end: int | None, end_line: int, *, last: bool, **extra) -> dict:
        residues = np.frombuffer(b"".join(self.seqs), dtype=np.uint8)
        offsets = np.zeros(len(self.seqs) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, self.seqs), np.int64, len(self.seqs)), out=offsets[1:])
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
            "valid": len(self.ids),
            **extra,
        }
        path = part_path(work_dir, self.unit.index, self.index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=_blob(meta),
                ids=np.frombuffer("\n".join(self.ids).encode("utf-8"), dtype=np.uint8),
                residues=residues,
                seq_offsets=offsets,
                digests=np.frombuffer(b"".join(self.digests), dtype=np.uint8),
                taxa=np.asarray(self.taxa, dtype=np.int64),
                lines=np.asarray(self.lines, dtype=np.int64),
                inactive=np.asarray(self.inactive, dtype=bool),
                rejected=_blob(self.rejected),
            )
        # No fsync: a part only caches work. After a kill -9 the page cache still holds it; after
        # a power loss a damaged part fails its zip CRC on loading and its unit is parsed again.
        os.replace(tmp, path)
        return meta


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
    # Parsing allocates millions of small objects and makes no reference cycles, so the
    # cyclic garbage collector would only spend time scanning them.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_unit(path, unit, work_dir, settings)
    finally:
        if enabled:
            gc.enable()


def _parse_unit(path: Path, unit: Unit, work_dir: Path, settings: ParseSettings) -> dict:
    metas, start, line = _resume_point(work_dir, unit)
    if metas and metas[-1]["last"]:
        return {"parts": metas}
    builder = _PartBuilder(unit, len(metas), start, line)
    valid, require_active = settings.valid, settings.require_active
    ids, seqs, digests, taxa = builder.ids, builder.seqs, builder.digests, builder.taxa
    lines, inactive = builder.lines, builder.inactive
    blake2b = hashlib.blake2b
    limit = start + settings.chunk_bytes
    next_line, position = line, start
    try:
        for chunk in iter_chunks(path, start, unit.end, start_line=line):
            if chunk.offset >= limit and builder.records:
                size = chunk.offset - builder.start
                metas.append(
                    builder.save(work_dir, chunk.offset, chunk.line, last=False, bytes=size)
                )
                builder = _PartBuilder(unit, len(metas), chunk.offset, chunk.line)
                ids, seqs, digests, taxa = builder.ids, builder.seqs, builder.digests, builder.taxa
                lines, inactive = builder.lines, builder.inactive
                limit = chunk.offset + settings.chunk_bytes
            if chunk.orphan:
                orphan = RawRecord(chunk.data, chunk.offset, chunk.line, orphan=True)
                results = [check_record(orphan, valid)]
            else:
                results = check_chunk(chunk, valid)
            for record in results:
                if type(record) is FastaRecord:
                    record_id, sequence, header, record_line, _ = record
                    ids.append(record_id)
                    seqs.append(sequence)
                    digests.append(blake2b(sequence, digest_size=DIGEST_SIZE).digest())
                    taxon = header.taxon
                    taxa.append(-1 if taxon is None else taxon)
                    lines.append(record_line)
                    inactive.append(require_active and header.fields().get("status") == "inactive")
                else:
                    builder.rejected.append(
                        [record.id, record.reason, record.detail, record.line, record.offset]
                    )
            # Where this unit's text ends so far, and the line there (the next unit's base).
            position = chunk.offset + len(chunk.data)
            next_line = chunk.line + chunk.data.count(b"\n")
    except TruncatedFastaError as err:
        if settings.on_truncated != "keep":
            return {"error": str(err)}
        if err.partial_offset is not None:
            builder.rejected.append(
                [err.partial_id or "", "truncated_input", "record cut off by the damage",
                 err.partial_line, err.partial_offset]
            )  # fmt: skip
        truncated = {"offset": err.offset, "line": err.line, "message": str(err)}
        size = err.offset - builder.start
        metas.append(
            builder.save(work_dir, None, err.line, last=True, truncated=truncated, bytes=size)
        )
        return {"parts": metas}
    except FastaError as err:
        return {"error": str(err)}
    except OSError as err:
        return {"error": f"{path}: cannot read ({err.strerror or err})"}
    size = (position if unit.end is None else unit.end) - builder.start
    metas.append(builder.save(work_dir, unit.end, next_line, last=True, bytes=size))
    return {"parts": metas}
