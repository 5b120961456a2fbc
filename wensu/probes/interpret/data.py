"""Labelled proteins for the interpretability and robustness probes: any FASTA (organism from
UniProt ``OS=`` headers, or labels from a TSV), or the documented default set (AMRFinderPlus
proteins labelled by drug class plus a few UniProt proteomes labelled by organism).

Records are validated by the shared FASTA reader: lower case is upper-cased, a terminal ``*``
is stripped, and any other character outside the alphabet raises an error naming the file,
line, record and characters.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from wensu.data.fasta import read_fasta
from wensu.probes.amr.probe import drug_class_task, read_amr_tsv
from wensu.probes.common.context import stable_subset
from wensu.probes.common.errors import ProbeDataError

AMR_TSV = "amr/amrfinderplus_2024-07-22.1_proteins_labelled.tsv"
PROTEOME_DIR = "sequences/uniprot_proteomes"
DRUG_CLASS = "drug class"
ORGANISM = "organism"
_ORGANISM = re.compile(r"(?:^|\s)OS=(.+?)(?=\s(?:OX|GN|PE|SV)=|$)")


@dataclass(frozen=True)
class LabelledProtein:
    """One protein; ``labels`` maps a label kind (``organism``, ``drug class``) to its value."""

    id: str
    sequence: str
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, kind: str) -> str | None:
        return dict(self.labels).get(kind)


def organism_of(description: str) -> str | None:
    """The ``OS=`` value of a UniProt-style header description (strain in brackets dropped)."""
    found = _ORGANISM.search(description)
    if not found:
        return None
    return re.sub(r"\s*\(.*\)\s*$", "", found.group(1)).strip() or None


def read_label_tsv(path: Path) -> dict[str, str]:
    """``id -> label`` from a two-column TSV (header ``id<TAB>label``, the label name is free)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except OSError as err:
        raise ProbeDataError(f"{path}: label TSV cannot be read ({err})") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ProbeDataError(f"{path}: label TSV needs a header (id, label) and at least one row")
    labels = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[0]:
            raise ProbeDataError(f"{path}: line {line}: expected 'id<TAB>label', got {row!r}")
        labels[row[0]] = row[1]
    return labels


def read_proteins(
    path: Path, label_tsv: Path | None = None, label_name: str = ORGANISM
) -> list[LabelledProtein]:
    """Every record of a FASTA file, labelled by ``OS=`` (organism) or by ``label_tsv``.

    Raises :class:`ValueError` subclasses naming the file (and record) for a missing or empty
    file, a record with characters outside the protein alphabet, or duplicate ids.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ProbeDataError(
            f"input {path}: not a regular file (a pipe, FIFO or device): save it to a file first"
        )
    if not path.is_file():
        raise ProbeDataError(f"input {path}: no such file")
    table = read_label_tsv(label_tsv) if label_tsv else None
    proteins, seen = [], set()
    for record in read_fasta(path, errors="raise"):
        if not record.sequence:
            raise ProbeDataError(f"input {path}: line {record.line}: record {record.id!r} is empty")
        if record.id in seen:
            raise ProbeDataError(f"input {path}: duplicate record id {record.id!r}")
        seen.add(record.id)
        if table is not None:
            value = table.get(record.id)
        else:
            value = organism_of(record.header.description)
        labels = ((label_name if table is not None else ORGANISM, value),) if value else ()
        proteins.append(LabelledProtein(record.id, record.sequence.decode("ascii"), labels))
    if not proteins:
        raise ProbeDataError(f"input {path}: no FASTA records (empty file?)")
    return proteins


def default_proteins(
    data_dir: Path,
    *,
    amr_per_class: int | None,
    amr_min_members: int,
    proteomes: list[str],
    per_proteome: int | None,
    max_length: int | None,
) -> tuple[list[LabelledProtein], list[Path]]:
    """The default interpretability set and the files it was read from.

    AMR proteins of drug classes with >= ``amr_min_members`` members (``amr_per_class`` per
    class, a fixed pseudo-random subset) labelled by drug class, then ``per_proteome`` proteins
    of each named proteome file labelled by organism. Proteins longer than ``max_length`` are
    left out before sampling.
    """
    amr_path = data_dir / AMR_TSV
    amr, _ = read_amr_tsv(amr_path)
    if max_length:
        amr = [p for p in amr if len(p.sequence) <= max_length]
    chosen, _ = drug_class_task(amr, amr_min_members, amr_per_class)
    proteins = [
        LabelledProtein(p.accession, p.sequence, ((DRUG_CLASS, p.drug_class), ("family", p.family)))
        for p in chosen
    ]
    files = [amr_path]
    for name in proteomes:
        path = data_dir / PROTEOME_DIR / name
        records = [
            p for p in read_proteins(path) if not max_length or len(p.sequence) <= max_length
        ]
        proteins += stable_subset(records, per_proteome, key=lambda p: p.id)
        files.append(path)
    return proteins, files
