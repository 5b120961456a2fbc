"""The output directory's life cycle: fresh start, resume, or "already complete".

``<output>/.work/`` holds what a rerun needs to resume (parsed parts, shard journal, MMseqs2
results) under ``state.json``'s fingerprint of the settings and inputs. A rerun with the same
fingerprint resumes; with another one it starts over, after refusing (unless ``overwrite``) if
a finished dataset from other settings would be replaced.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from wensu.data.shards import MANIFEST_NAME, SPLITS, read_manifest, sha256_file

from .errors import OutputExistsError

log = logging.getLogger(__name__)

WORK_DIR = ".work"
STATE_NAME = "state.json"
REPORT_NAMES = ("quarantine.tsv", "duplicates.tsv", "stats.json", MANIFEST_NAME)
PAUSE_ENV = "WENSU_PREPROCESS_TEST_PAUSE"
PAUSE_FILE_ENV = "WENSU_PREPROCESS_TEST_PAUSE_FILE"
CRASH_FILE_ENV = "WENSU_PREPROCESS_TEST_CRASH_FILE"


def write_json_atomic(path: Path, obj) -> None:
    """Sorted, indented JSON via a temporary file, fsync and rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(obj, sort_keys=True, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _remove_outputs(output: Path) -> None:
    for split in SPLITS:
        for path in (output / split).glob("shard-*.h5*"):
            path.unlink()
    for name in REPORT_NAMES:
        for path in (output / name, output / (name + ".tmp")):
            path.unlink(missing_ok=True)
    shutil.rmtree(output / WORK_DIR, ignore_errors=True)


def _remove_temporaries(output: Path) -> None:
    for split in SPLITS:
        for path in (output / split).glob("*.tmp"):
            path.unlink()
    for path in (output / WORK_DIR).rglob("*.tmp"):
        path.unlink()


def complete_manifest(output: Path, fingerprint: str) -> dict | None:
    """The existing manifest if it was made with ``fingerprint`` and every shard is intact."""
    if not (output / MANIFEST_NAME).exists():
        return None
    try:
        manifest = read_manifest(output)
    except ValueError:
        return None
    if manifest.get("fingerprint") != fingerprint:
        return None
    for split in manifest.get("splits", {}).values():
        for shard in split["shards"]:
            path = output / shard["path"]
            if not path.exists() or sha256_file(path) != shard["sha256"]:
                log.warning("%s: shard missing or changed; rebuilding the dataset", path)
                return None
    return manifest


def _fingerprint_of(output: Path) -> str | None:
    try:
        return read_manifest(output).get("fingerprint")
    except ValueError:
        return None


def prepare(output: Path, fingerprint: str, *, overwrite: bool) -> Path:
    """Make ``output`` ready for a run with ``fingerprint``; returns the work directory."""
    work = output / WORK_DIR
    state_path = work / STATE_NAME
    state = None
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            state = None
    if state is not None and state.get("fingerprint") == fingerprint:
        log.info("%s: resuming an interrupted run", output)
        _remove_temporaries(output)
        return work
    manifest_path = output / MANIFEST_NAME
    if manifest_path.exists() and not overwrite and _fingerprint_of(output) != fingerprint:
        raise OutputExistsError(
            f"{output}: already holds a dataset made from other inputs or settings; "
            "choose another output or pass overwrite=true to replace it"
        )
    if state is not None or manifest_path.exists():
        log.info("%s: settings or inputs changed; starting over", output)
    _remove_outputs(output)
    (work / "parts").mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_path, {"fingerprint": fingerprint})
    return work


def finish(output: Path, keep_work: bool) -> None:
    """Drop the work directory once the manifest is in place."""
    if not keep_work:
        shutil.rmtree(output / WORK_DIR, ignore_errors=True)


class PauseHook:
    """Test-only: ``WENSU_PREPROCESS_TEST_PAUSE=shard:N`` (or ``part:N``) makes the run touch
    ``$WENSU_PREPROCESS_TEST_PAUSE_FILE`` and sleep after its N-th written shard (parsed part),
    so a test can kill -9 it at a known point. Unset, it does nothing."""

    def __init__(self) -> None:
        kind, _, count = os.environ.get(PAUSE_ENV, "").partition(":")
        self.kind = kind
        self.after = int(count) if count.isdigit() else 0
        self.seen = 0
        # Called before pausing, so that background work (a shard being written) is finished
        # and the kill lands at a known point.
        self.settle: Callable[[], None] | None = None

    def armed(self, kind: str) -> bool:
        """True when this run will pause at ``kind`` events."""
        return bool(self.after) and kind == self.kind

    def __call__(self, kind: str) -> None:
        if not self.after or kind != self.kind:
            return
        self.seen += 1
        if self.seen == self.after:
            if self.settle is not None:
                self.settle()
            marker = os.environ.get(PAUSE_FILE_ENV)
            if marker:
                Path(marker).write_text(f"paused after {kind} {self.seen}\n")
            time.sleep(600)


def crash_once_for_tests() -> None:
    """Test-only: if ``$WENSU_PREPROCESS_TEST_CRASH_FILE`` names an existing file, remove it and
    end this process at once (a worker dying mid-task, as a killed node would). Unset, or once
    the file is gone, it does nothing."""
    marker = os.environ.get(CRASH_FILE_ENV)
    if marker and Path(marker).exists():
        Path(marker).unlink(missing_ok=True)
        os._exit(1)
