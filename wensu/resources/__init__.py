"""Package data: the embedded default sample (see SOURCES.md beside this file)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_FASTA_NAME = "UP000000625-E.coli.fasta.gz"


def default_fasta() -> Path:
    """Path of the embedded E. coli K-12 proteome (UniProtKB UP000000625, CC BY 4.0)."""
    return Path(str(resources.files(__package__).joinpath(DEFAULT_FASTA_NAME)))
