"""Errors raised by the evaluation probes for bad user-facing inputs, and the log of inputs
skipped for them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass
class SkipLog:
    """Files read for a set and the structures skipped, counted by reason (StructureError)."""

    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def attempt(self, make: Callable[[], Any], into: list) -> None:
        """Append ``make()`` to ``into``, or count and keep its StructureError."""
        try:
            into.append(make())
        except StructureError as err:
            self.skipped[err.reason] += 1
            self.errors.append(str(err))
