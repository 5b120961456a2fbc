"""Writing files so that a reader never sees half of one: a temporary name, fsync, rename, then
fsync of the folder. Used for manifests, vocabularies and reports by every part of wensu (a
leaf module: it imports nothing of wensu)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (after a rename) to disk, where the filesystem allows."""
    # Makes the rename itself durable; some filesystems refuse fsync on directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open ``<path>.tmp`` for writing; on success flush, fsync and rename it over ``path``
    (then fsync the folder); on any error remove it, so ``path`` is old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via ``<path>.tmp``, fsync and rename (never a half file)."""
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)
