"""The output directory's life cycle for cells: fresh start, resume, or already complete.

``<output>/.work/`` holds ``state.json`` (the fingerprint of settings + inputs), ``scan/`` (one
cached pass-1 result per input) and ``journal.json`` (every shard written, per input file). A
rerun with the same fingerprint resumes from them; with another it starts over, after refusing
(unless ``overwrite``) to replace a finished dataset made from other settings.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from wensu.data.shards import MANIFEST_NAME, SPLITS, read_manifest, sha256_file, write_text_atomic

from ..errors import OutputExistsError

WORK_DIR = ".work"
STATE_NAME = "state.json"
JOURNAL_NAME = "journal.json"
OUTPUT_NAMES = (
    MANIFEST_NAME,
    "vocab.json",
    "panels.json",
    "stats.json",
    "quarantine.tsv",
    "duplicates.tsv",
    "genes_dropped.tsv",
)
PAUSE_ENV = "WENSU_CELLS_TEST_PAUSE_AFTER_SHARDS"
PAUSE_FILE_ENV = "WENSU_CELLS_TEST_PAUSE_FILE"


def write_json(path: Path, obj) -> None:
    """Sorted, indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(obj, sort_keys=True, indent=2) + "\n")


def read_json(path: Path, default=None):
    """A JSON file's content, or ``default`` when it is missing or unreadable (then rebuilt)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def complete_manifest(output: Path, fingerprint: str) -> dict | None:
    """The existing manifest if it was made with ``fingerprint`` and every shard is intact."""
    try:
        manifest = read_manifest(output)
    except ValueError:
        return None
    if manifest.get("kind") != "cells" or manifest.get("fingerprint") != fingerprint:
        return None
    for split in manifest.get("splits", {}).values():
        for shard in split["shards"]:
            path = output / shard["path"]
            if not path.is_file() or sha256_file(path) != shard["sha256"]:
                return None
    return manifest


def _remove_outputs(output: Path) -> None:
    for split in SPLITS:
        for path in (output / split).glob("shard-*.h5*"):
            path.unlink()
    for name in OUTPUT_NAMES:
        for path in (output / name, output / (name + ".tmp")):
            path.unlink(missing_ok=True)
    shutil.rmtree(output / WORK_DIR, ignore_errors=True)


def prepare(output: Path, fingerprint: str, *, overwrite: bool) -> Path:
    """Make ``output`` ready for a run with ``fingerprint``; returns the work directory."""
    work = output / WORK_DIR
    state = read_json(work / STATE_NAME)
    if isinstance(state, dict) and state.get("fingerprint") == fingerprint:
        for path in list(output.glob("*/*.tmp")) + list(work.rglob("*.tmp")):
            path.unlink()
        return work
    if (output / MANIFEST_NAME).exists() and not overwrite:
        raise OutputExistsError(
            f"{output}: already holds a dataset made from other inputs or settings (or one whose "
            "shards are missing or changed); choose another output or pass overwrite=true to "
            "replace it"
        )
    _remove_outputs(output)
    (work / "scan").mkdir(parents=True, exist_ok=True)
    write_json(work / STATE_NAME, {"fingerprint": fingerprint})
    return work


def finish(output: Path, keep_work: bool) -> None:
    """Drop the work directory once the manifest is in place."""
    if not keep_work:
        shutil.rmtree(output / WORK_DIR, ignore_errors=True)


class PauseHook:
    """Test-only: with ``WENSU_CELLS_TEST_PAUSE_AFTER_SHARDS=N`` the run touches
    ``$WENSU_CELLS_TEST_PAUSE_FILE`` and sleeps after its N-th written shard, so a test can
    kill -9 it at a known point. Unset, it does nothing."""

    def __init__(self) -> None:
        value = os.environ.get(PAUSE_ENV, "")
        self.after = int(value) if value.isdigit() else 0
        self.seen = 0

    def __call__(self) -> None:
        if not self.after:
            return
        self.seen += 1
        if self.seen == self.after:
            marker = os.environ.get(PAUSE_FILE_ENV)
            if marker:
                Path(marker).write_text(f"paused after shard {self.seen}\n")
            time.sleep(600)
