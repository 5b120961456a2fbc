"""Errors raised by the evaluation probes for bad user-facing inputs."""

from __future__ import annotations


class ProbeDataError(ValueError):
    """An evaluation data file (CSV, FASTA, archive, TSV) is malformed; the message names it."""


class StructureError(ValueError):
    """A structure file cannot give a contact map; the message names the file, chain and reason.

    ``reason`` is a short machine-readable key (``chain_missing``, ``no_coordinates``, ...) so the
    contact probe can count skipped structures by cause in its report.
    """

    def __init__(self, source: str, reason: str, detail: str = ""):
        self.source = source
        self.reason = reason
        self.detail = detail
        text = f"{source}: {reason}"
        super().__init__(f"{text} ({detail})" if detail else text)


class EvalConfigError(ValueError):
    """A wensu-eval option is invalid (the message names it)."""
