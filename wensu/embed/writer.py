"""Crash-safe writing of embeddings: HDF5 segments merged into one file, or one file per sequence.

HDF5 is not safe against a killed writer (metadata cached in memory can leave the whole file
unreadable), so ``wensu-embed`` never writes into the final ``.h5`` while embedding. Each worker
streams groups into a segment file in ``<output>.parts/`` (``seg-*.h5.tmp``), and every
``segment_sequences`` sequences it flushes, fsyncs and renames it to ``seg-*.h5``: a renamed
segment is complete, a ``.tmp`` one is discarded on rerun, so its sequences are redone. When all
sequences are embedded, the segments (and an already existing output, for appends) are copied
into ``<output>.tmp``, which is fsynced and renamed over ``<output>``; then the parts folder goes.
Within a group the ``complete`` attribute is written last, and readers skip groups without it.

``format=npz|pt`` writes one file per sequence into the output directory, each atomically
(temporary name, rename), so a present file is a complete one.

The settings that change the numbers (checkpoint hash, layers, pooling, dtype, long-sequence
handling, precision) are stored with the parts, in the output file and in the npz/pt folder; a
run whose settings differ refuses to add to them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from wensu.embed.file_format import (
    ESM_KEYS,
    FORMAT_VERSION,
    SequenceEmbedding,
    decode_id,
    encode_id,
    layer_name,
)

FORMATS = ("h5", "npz", "pt")
SETTINGS_NAME = "settings.json"
DIGEST_KEY = "sequence_sha256"  # per entry: the residues it is an embedding of
# npz/pt folders keep fair-esm's keys; digests go to a journal, written before each file lands.
DIGEST_JOURNAL = "sequence_sha256.tsv"
DIR_SETTINGS_NAME = "wensu-embed.json"
# Test hook: a writer announces on stderr and sleeps after writing N sequences (so a test can
# kill -9 it with a segment half full).
SLEEP_AFTER_ENV = "WENSU_EMBED_TEST_SLEEP_AFTER"


class OutputError(ValueError):
    """The output path cannot be used: not writable, or made with different settings."""


def parts_dir_of(output: Path) -> Path:
    """Folder of in-progress HDF5 segments for ``output``."""
    return output.with_name(output.name + ".parts")


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync_path(tmp)
    os.replace(tmp, path)


def _mismatch(path: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    diffs = [
        f"{key}: file has {stored.get(key)!r}, this run {wanted[key]!r}"
        for key in wanted
        if stored.get(key) != wanted[key]
    ]
    if diffs:
        raise OutputError(
            f"{path} was made with different settings ({'; '.join(diffs)}); "
            "refusing to add to it: choose another output path or delete it"
        )


def write_group(
    handle: h5py.File,
    record_id: str,
    length: int,
    embedding: SequenceEmbedding,
    per_residue_dtype: str,
    digest: str | None = None,
) -> None:
    """Write one sequence's group; ``complete`` is set only after every dataset exists."""
    name = encode_id(record_id)
    if name in handle:
        del handle[name]
    group = handle.create_group(name)
    group.attrs["id"] = record_id
    group.attrs["length"] = length
    if digest is not None:
        group.attrs[DIGEST_KEY] = digest
    for layer, kinds in sorted(embedding.items()):
        layer_group = group.create_group(layer_name(layer))
        for kind, values in kinds.items():
            dtype = per_residue_dtype if kind == "per_residue" else "float32"
            _write_dataset(layer_group, kind, values, dtype)
    group.attrs["complete"] = True


ROW_BLOCK_BYTES = 64 * 2**20


def _write_dataset(group: h5py.Group, name: str, values: np.ndarray, dtype: str) -> None:
    """One dataset; a large 2-D array (a long sequence's per-residue vectors, possibly
    disk-backed) is converted and written in row blocks, never copied whole."""
    values = np.asanyarray(values)
    if values.ndim != 2 or values.nbytes <= ROW_BLOCK_BYTES:
        group.create_dataset(name, data=np.asarray(values, dtype=dtype))
        return
    dataset = group.create_dataset(name, shape=values.shape, dtype=dtype)
    step = max(1, ROW_BLOCK_BYTES // max(values.shape[1] * values.itemsize, 1))
    for start in range(0, values.shape[0], step):
        dataset[start : start + step] = np.asarray(values[start : start + step], dtype=dtype)


Entries = dict[str, tuple[str | None, int | None]]  # id -> (sequence digest, length)


def _h5_entries(path: Path) -> Entries:
    """Complete groups of an HDF5 file or segment: id -> (digest or None, stored length)."""
    with h5py.File(path, "r") as handle:
        return {
            decode_id(name): (_text(g.attrs.get(DIGEST_KEY)), _int(g.attrs.get("length")))
            for name, g in handle.items()
            if g.attrs.get("complete", False)
        }


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else (str(value) if value else None)


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _h5_settings(handle: h5py.File) -> dict[str, Any]:
    raw = handle.attrs.get("settings")
    return json.loads(raw) if raw is not None else {}


@contextlib.contextmanager
def output_lock(output: Path, fmt: str) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` so two runs never write it at once.

    ``flock`` locks die with their process, so a killed run leaves nothing to clean up.
    """
    path = output / ".lock" if fmt != "h5" else output.with_name(output.name + ".lock")
    handle = open(path, "a")  # noqa: SIM115 - held open for the duration of the run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"output {output} is being written by another wensu-embed run ({path} is locked)"
            ) from None
        try:
            yield
        finally:  # held by us: removed whether the run ends or is refused
            path.unlink(missing_ok=True)
    finally:
        handle.close()


def check_writable(output: Path, fmt: str) -> None:
    """Fail early, before any work, when ``output`` cannot be created or written."""
    if fmt == "h5" and output.is_dir():
        raise OutputError(f"output {output} is a directory; format=h5 needs a file path")
    if fmt != "h5" and output.exists() and not output.is_dir():
        raise OutputError(f"output {output} is a file; format={fmt} writes a directory")
    folder = output if fmt != "h5" else output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".wensu-embed-probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"cannot write output {output}: {reason}") from None


def prepare_output(output: Path, fmt: str, settings: Mapping[str, Any]) -> Entries:
    """Create the output location, check it matches ``settings``, return the entries already
    done (id -> sequence digest and length)."""
    if fmt not in FORMATS:
        raise OutputError(f"format must be one of {FORMATS}, got {fmt!r}")
    try:
        return _prepare_h5(output, settings) if fmt == "h5" else _prepare_dir(output, settings)
    except PermissionError as err:
        raise OutputError(f"cannot write output {output}: {err.strerror}") from None
    except OSError as err:
        if isinstance(err, OutputError):
            raise
        raise OutputError(f"cannot write output {output}: {err}") from None


def _prepare_h5(output: Path, settings: Mapping[str, Any]) -> Entries:
    check_writable(output, "h5")
    done: Entries = {}
    if output.exists():
        try:
            with h5py.File(output, "r") as handle:
                _mismatch(output, _h5_settings(handle), settings)
        except OSError as err:
            raise OutputError(f"output {output} exists but is not an HDF5 file ({err})") from None
        done.update(_h5_entries(output))
    parts = parts_dir_of(output)
    settings_path = parts / SETTINGS_NAME
    if settings_path.exists():
        _mismatch(parts, json.loads(settings_path.read_text()), settings)
    parts.mkdir(exist_ok=True)
    for stale in parts.glob("*.tmp"):
        stale.unlink()
    _atomic_write_text(settings_path, json.dumps(dict(settings), sort_keys=True))
    for segment in sorted(parts.glob("seg-*.h5")):
        done.update(_h5_entries(segment))
    return done


def _prepare_dir(output: Path, settings: Mapping[str, Any]) -> Entries:
    check_writable(output, settings["format"])
    settings_path = output / DIR_SETTINGS_NAME
    if settings_path.exists():
        _mismatch(output, json.loads(settings_path.read_text()).get("settings", {}), settings)
    else:
        _atomic_write_text(settings_path, json.dumps({"settings": dict(settings)}, sort_keys=True))
    for stale in output.glob("*.tmp"):
        stale.unlink()
    digests = read_digest_journal(output)
    return {
        record_id: (digests.get(record_id), None)
        for record_id in per_sequence_ids(output, settings["format"])
    }


def read_digest_journal(output_dir: Path) -> dict[str, str]:
    """id -> sequence digest from the folder's journal (the last line of an id wins)."""
    path = output_dir / DIGEST_JOURNAL
    digests: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, digest = line.partition("\t")
            if digest:
                digests[decode_id(name)] = digest
    return digests


def reusable(output: Path, done: Entries, ids: list[str], digests: list[str]) -> set[str]:
    """The ids whose stored embedding is of the same sequence; a changed (or unprovable)
    sequence under an id already embedded is refused in one line, never reused."""
    changed = [
        (record_id, digest)
        for record_id, digest in zip(ids, digests, strict=True)
        if record_id in done and done[record_id][0] != digest
    ]
    if changed:
        record_id, _ = changed[0]
        stored, length = done[record_id]
        why = (
            "was embedded from a different sequence"
            if stored
            else ("has no sequence digest (written by an older wensu-embed)")
        )
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        had = f", stored length {length}" if length is not None else ""
        raise OutputError(
            f"{output}: record {record_id!r}{more} {why}{had}; an embedding is never reused "
            f"for another sequence: write to a new output, or delete {output} to embed again"
        )
    return {record_id for record_id in ids if record_id in done}


def per_sequence_ids(output_dir: Path, fmt: str) -> set[str]:
    """Ids that have a (complete, since atomically written) ``.npz``/``.pt`` file."""
    suffix = f".{fmt}"
    return {decode_id(p.name[: -len(suffix)]) for p in output_dir.glob(f"*{suffix}")}


class _SleepHook:
    """Sleeps after the N-th written sequence when the test environment variable is set."""

    def __init__(self) -> None:
        value = os.environ.get(SLEEP_AFTER_ENV)
        self.after = int(value) if value else None
        self.count = 0

    def written(self) -> None:
        self.count += 1
        if self.after is not None and self.count >= self.after:
            print(f"{SLEEP_AFTER_ENV}: sleeping after {self.count}", file=sys.stderr, flush=True)
            time.sleep(3600)


class SegmentWriter:
    """Streams groups into HDF5 segment files in the parts folder, committing every N sequences."""

    def __init__(self, parts_dir: Path, per_residue_dtype: str, segment_sequences: int):
        self.parts_dir = parts_dir
        self.per_residue_dtype = per_residue_dtype
        self.segment_sequences = max(1, segment_sequences)
        self._handle: h5py.File | None = None
        self._path: Path | None = None
        self._pending = 0
        self._hook = _SleepHook()

    def write(
        self, record_id: str, length: int, embedding: SequenceEmbedding, digest: str | None = None
    ) -> None:
        """Add one sequence; it becomes durable when its segment is committed."""
        if self._handle is None:
            self._path = self.parts_dir / f"seg-{uuid.uuid4().hex}.h5"
            self._handle = h5py.File(self._path.with_name(self._path.name + ".tmp"), "w")
        write_group(self._handle, record_id, length, embedding, self.per_residue_dtype, digest)
        self._pending += 1
        self._hook.written()
        if self._pending >= self.segment_sequences:
            self.commit()

    def commit(self) -> None:
        """Close the open segment and rename it into place (nothing to do when none is open)."""
        if self._handle is None or self._path is None:
            return
        self._handle.flush()
        self._handle.close()
        tmp = self._path.with_name(self._path.name + ".tmp")
        _fsync_path(tmp)
        os.replace(tmp, self._path)
        _fsync_path(self.parts_dir)
        self._handle, self._pending = None, 0

    close = commit


class PerSequenceFileWriter:
    """One fair-esm-style ``.pt`` or ``.npz`` file per sequence, each written atomically."""

    def __init__(self, output_dir: Path, fmt: str, per_residue_dtype: str):
        self.output_dir = output_dir
        self.fmt = fmt
        self.per_residue_dtype = per_residue_dtype
        self._hook = _SleepHook()

    def write(
        self, record_id: str, length: int, embedding: SequenceEmbedding, digest: str | None = None
    ) -> None:
        """Write ``<encoded id>.<fmt>`` with keys ``label`` and ``*_representations`` (its
        sequence digest goes to the folder's journal first)."""
        path = self.output_dir / f"{encode_id(record_id)}.{self.fmt}"
        tmp = path.with_name(path.name + ".tmp")
        nested: dict[str, dict[int, np.ndarray]] = {}
        for layer, kinds in sorted(embedding.items()):
            for kind, values in kinds.items():
                dtype = self.per_residue_dtype if kind == "per_residue" else "float32"
                nested.setdefault(ESM_KEYS[kind], {})[layer] = np.asarray(values, dtype=dtype)
        with open(tmp, "wb") as handle:
            if self.fmt == "pt":
                payload: dict[str, Any] = {"label": record_id}
                for key, by_layer in nested.items():
                    payload[key] = {k: torch.from_numpy(v) for k, v in by_layer.items()}
                torch.save(payload, handle)
            else:
                flat = {
                    f"{key}/{k}": v for key, by_layer in nested.items() for k, v in by_layer.items()
                }
                np.savez(handle, label=np.array(record_id), **flat)
        if digest is not None:  # before the file lands: a present file always has its digest
            with open(self.output_dir / DIGEST_JOURNAL, "a", encoding="utf-8") as journal:
                journal.write(f"{encode_id(record_id)}\t{digest}\n")
                journal.flush()
                os.fsync(journal.fileno())
        os.replace(tmp, path)
        self._hook.written()

    def close(self) -> None:
        """Nothing is buffered; present for symmetry with :class:`SegmentWriter`."""


def finalize_h5(output: Path, attrs: Mapping[str, Any]) -> int:
    """Merge committed segments (and an existing ``output``) atomically into ``output``.

    Returns the number of sequences in the final file. Order-independent: groups are keyed by id.
    """
    parts = parts_dir_of(output)
    segments = sorted(parts.glob("seg-*.h5")) if parts.exists() else []
    if not segments and output.exists():
        if parts.exists():
            shutil.rmtree(parts)
        with h5py.File(output, "r") as handle:
            return len(handle)
    tmp = output.with_name(output.name + ".tmp")
    if output.exists():
        shutil.copyfile(output, tmp)
    with h5py.File(tmp, "a" if output.exists() else "w") as dst:
        for key, value in attrs.items():
            dst.attrs[key] = value
        for segment in segments:
            with h5py.File(segment, "r") as src:
                for name, group in src.items():
                    if not group.attrs.get("complete", False):
                        continue
                    if name in dst:
                        del dst[name]
                    src.copy(group, dst, name=name)
        count = len(dst)
    _fsync_path(tmp)
    os.replace(tmp, output)
    _fsync_path(output.parent)
    if parts.exists():
        shutil.rmtree(parts)
    return count


def write_dir_attrs(output_dir: Path, attrs: Mapping[str, Any]) -> None:
    """Record the run's metadata beside per-sequence files (``wensu-embed.json``)."""
    payload = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
    for key in ("model_config", "settings"):
        if isinstance(payload.get(key), str):
            payload[key] = json.loads(payload[key])
    payload["format_version"] = FORMAT_VERSION
    _atomic_write_text(
        output_dir / DIR_SETTINGS_NAME, json.dumps(payload, sort_keys=True, indent=2)
    )
