"""Errors of the preprocessing pipeline: each names the file, record or setting at fault."""

from __future__ import annotations


class PreprocessError(ValueError):
    """A preprocessing run cannot go on; the message says what to fix."""


class InputError(PreprocessError):
    """An input path, directory or URL is missing, empty, unreadable or not FASTA."""


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
