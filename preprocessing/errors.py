"""Errors of the preprocessing pipeline: each names the file, record or setting at fault."""

from __future__ import annotations

import errno
from pathlib import Path


class PreprocessError(ValueError):
    """A preprocessing run cannot go on; the message says what to fix."""


class InputError(PreprocessError):
    """An input path, directory or URL is missing, empty, unreadable or not FASTA."""


class EmptyDatasetError(InputError):
    """No record survived: the inputs hold none, or every one was filtered or quarantined."""


class ConfigError(PreprocessError):
    """A preprocessing setting is out of range or inconsistent."""


class AccountingError(PreprocessError):
    """Records were lost or counted twice: read != written + duplicates + filtered + quarantined."""


class ToolError(PreprocessError):
    """An external tool (MMseqs2) is missing or failed."""


class OutputExistsError(PreprocessError):
    """The output directory already holds a dataset made from other inputs or settings."""


class OutputError(PreprocessError):
    """The output (or work) directory cannot be written: disk full, permissions."""


def write_failure(err: OSError, where: Path) -> str:
    """The one-line message for a failed write: what, where, and that a rerun resumes."""
    where = err.filename or where
    if err.errno == errno.ENOSPC:
        return (
            f"{where}: no space left on device; no half-written file is kept: free space "
            "and run the same command again to resume"
        )
    return f"{where}: cannot write ({err.strerror or err}); run the same command again to resume"


def empty_message(inputs: list[dict], counts: dict, quarantine: Path) -> str:
    """Why a run wrote no record: the inputs it read, where the records went, the report."""
    names = [str(entry.get("path") or entry.get("url") or entry) for entry in inputs]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    if counts["read"] == 0:
        return f"no record written: {shown} holds no FASTA record; no dataset was published"
    reasons = {**counts["quarantined_by_reason"], **counts["filtered_by_reason"]}
    if counts["duplicates"]:
        reasons["duplicates"] = counts["duplicates"]
    why = ", ".join(f"{reason} {count:,}" for reason, count in sorted(reasons.items()))
    return (
        f"no record written: all {counts['read']:,} records of {shown} were removed ({why}); "
        f"see {quarantine}; no dataset was published"
    )
