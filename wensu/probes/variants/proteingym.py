"""ProteinGym-format DMS assays from user files (``probe.variants.sets`` path entries).

Each CSV is one assay, named by its file stem (ProteinGym's ``DMS_id``), with columns
``mutated_sequence`` and ``DMS_score`` (higher = fitter), ``mutant`` (``A12G`` or ``A12G:L45P``,
1-based on the wild type; absent in indel files) and optionally ``DMS_score_bin`` (1 = fit).
The wild type comes from a ProteinGym reference file (``DMS_substitutions.csv``: ``DMS_id``,
``target_seq``; given as ``probe.variants.reference`` or found next to the assays) or from a
FASTA next to the CSV with the same stem (``<DMS_id>.fasta``/``.fa``).

Rows whose ``mutated_sequence`` differs in length from the wild type make the assay an indel
assay, scored by pseudo-log-likelihood difference. Every problem (missing column, a mutant whose
wild-type residue does not match, a position outside the sequence, a duplicated mutant, a
non-numeric score, a ``mutated_sequence`` that disagrees with the mutant, an empty file) is a
:class:`VariantDataError` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wensu.probes.common.context import stable_subset
from wensu.probes.common.inputs import UserSet, file_stem
from wensu.probes.variants.data import (
    Mutant,
    VariantDataError,
    check_mutant,
    mutated_sequence,
    parse_mutant,
)

DMS_SUFFIXES = (".csv",)
REFERENCE_COLUMNS = ("DMS_id", "target_seq")
FASTA_SUFFIXES = (".fasta", ".fa", ".faa")
_RESIDUES = set("ACDEFGHIKLMNPQRSTVWYXBZUO")


@dataclass(frozen=True)
class DmsAssay:
    """One ProteinGym-format assay: rows in file order (after ``subset``)."""

    name: str  # DMS_id (file stem)
    path: Path
    wild_type: str
    wild_type_source: str
    mutants: tuple[str, ...]  # mutant names, or the mutated sequence for indel rows
    sequences: tuple[str, ...]
    parsed: tuple[Mutant, ...] | None  # substitutions; None for an indel assay
    scores: np.ndarray
    bins: np.ndarray | None  # DMS_score_bin (0/1), None when the file has none
    lines: np.ndarray
    reference: dict[str, str]

    @property
    def indel(self) -> bool:
        return self.parsed is None

    def __len__(self) -> int:
        return len(self.mutants)

    def subset(self, limit: int | None) -> DmsAssay:
        """At most ``limit`` rows: a fixed pseudo-random subset (CRC32 of the mutant name)."""
        chosen = stable_subset(range(len(self)), limit, lambda i: self.mutants[i])
        keep = np.sort(np.asarray(chosen, dtype=np.int64))

        def pick(values):
            return None if values is None else tuple(values[i] for i in keep)

        return replace(
            self,
            mutants=pick(self.mutants),
            sequences=pick(self.sequences),
            parsed=pick(self.parsed),
            scores=self.scores[keep],
            bins=None if self.bins is None else self.bins[keep],
            lines=self.lines[keep],
        )


def _open(path: Path):
    """Text handle of a CSV/FASTA, gzip-compressed when the name ends in .gz."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with _open(path) as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return [f.strip() for f in reader.fieldnames or []], rows
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise VariantDataError(f"{path}: unreadable CSV ({err})") from None


def is_reference_file(path: Path) -> bool:
    """Whether a CSV is a ProteinGym reference file (has DMS_id and target_seq columns)."""
    try:
        with _open(path) as handle:
            header = next(csv.reader(handle), [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
        return False
    return set(REFERENCE_COLUMNS) <= {h.strip() for h in header}


def read_reference(path: Path) -> dict[str, dict[str, str]]:
    """ProteinGym reference rows by DMS_id (also by DMS_filename stem when present)."""
    header, rows = _rows(Path(path))
    missing = [c for c in REFERENCE_COLUMNS if c not in header]
    if missing:
        raise VariantDataError(f"{path}: not a ProteinGym reference file (lacks {missing})")
    out: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        dms_id = (row.get("DMS_id") or "").strip()
        sequence = (row.get("target_seq") or "").strip().upper()
        if not dms_id or not sequence or not set(sequence) <= _RESIDUES:
            raise VariantDataError(f"{path} line {line}: empty DMS_id or invalid target_seq")
        row = {**row, "target_seq": sequence}
        out[dms_id] = row
        if row.get("DMS_filename"):
            out.setdefault(file_stem(row["DMS_filename"]), row)
    return out


def _fasta_wild_type(csv_path: Path) -> tuple[str, str] | None:
    for suffix in FASTA_SUFFIXES:
        candidate = csv_path.parent / f"{file_stem(csv_path)}{suffix}"
        if candidate.is_file():
            with _open(candidate) as handle:
                lines = handle.read().splitlines()
            if not lines or not lines[0].startswith(">"):
                raise VariantDataError(f"{candidate}: not a FASTA file (no '>' header)")
            headers = [i for i, line in enumerate(lines) if line.startswith(">")]
            if len(headers) > 1:
                raise VariantDataError(f"{candidate}: holds {len(headers)} sequences, expected one")
            sequence = "".join(line.strip() for line in lines[1:]).upper()
            if not sequence or not set(sequence) <= _RESIDUES:
                raise VariantDataError(f"{candidate}: empty or invalid wild-type sequence")
            return sequence, str(candidate)
    return None


def _float(value: str | None, where: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise VariantDataError(f"{where}: {column} {value!r} is not a finite number")
    return number


def read_assay(path: Path, reference: dict[str, dict[str, str]]) -> DmsAssay:
    """Read and check one ProteinGym-format DMS CSV (see the module docstring)."""
    path = Path(path)
    name = file_stem(path)
    from_fasta = _fasta_wild_type(path)
    if name in reference:
        wild_type, source, ref = reference[name]["target_seq"], "reference file", reference[name]
    elif from_fasta is not None:
        (wild_type, source), ref = from_fasta, {}
    else:
        raise VariantDataError(
            f"{path}: no wild-type sequence: give a ProteinGym reference file with DMS_id "
            f"{name!r} (probe.variants.reference=...) or put {name}.fasta next to the CSV"
        )
    header, rows = _rows(path)
    if not header:
        raise VariantDataError(f"{path}: empty file")
    missing = [c for c in ("mutated_sequence", "DMS_score") if c not in header]
    if missing:
        raise VariantDataError(f"{path}: missing column(s) {missing}; found {header}")
    if not rows:
        raise VariantDataError(f"{path}: no variants (header only)")
    has_mutant, has_bin = "mutant" in header, "DMS_score_bin" in header
    indel = not has_mutant or any(
        len((row.get("mutated_sequence") or "").strip()) != len(wild_type) for row in rows
    )
    names, sequences, parsed, scores, bins, lines = [], [], [], [], [], []
    first: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path} line {line}"
        sequence = (row.get("mutated_sequence") or "").strip().upper()
        if not sequence or not set(sequence) <= _RESIDUES:
            raise VariantDataError(f"{where}: empty or invalid mutated_sequence")
        label = (row.get("mutant") or "").strip() if has_mutant else sequence
        if has_mutant and len(sequence) == len(wild_type):
            mutant = parse_mutant(label, where=where)
            check_mutant(mutant, wild_type, 1, where=where)
            if mutated_sequence(wild_type, mutant) != sequence:
                raise VariantDataError(
                    f"{where}: mutated_sequence is not the wild type with {label} applied"
                )
            parsed.append(mutant)
        key = label if has_mutant else sequence
        if key in first:
            raise VariantDataError(
                f"{where}: duplicate mutant {key[:40]} (already on line {first[key]})"
            )
        first[key] = line
        scores.append(_float(row.get("DMS_score"), where, "DMS_score"))
        if has_bin:
            value = _float(row.get("DMS_score_bin"), where, "DMS_score_bin")
            if value not in (0.0, 1.0):
                raise VariantDataError(
                    f"{where}: DMS_score_bin {row['DMS_score_bin']!r} is not 0 or 1"
                )
            bins.append(int(value))
        names.append(label)
        sequences.append(sequence)
        lines.append(line)
    return DmsAssay(
        name=name,
        path=path,
        wild_type=wild_type,
        wild_type_source=source,
        mutants=tuple(names),
        sequences=tuple(sequences),
        parsed=None if indel else tuple(parsed),
        scores=np.asarray(scores, dtype=np.float64),
        bins=np.asarray(bins, dtype=np.int64) if has_bin else None,
        lines=np.asarray(lines, dtype=np.int64),
        reference=ref,
    )


def load_assays(
    user_sets: Sequence[UserSet], reference: str | Path | None, max_variants: int | None = None
) -> tuple[list[DmsAssay], list[Path]]:
    """Assays of the user sets (reference files among them are used, not scored) and the
    reference files read."""
    references = [Path(reference)] if reference else []
    csvs = []
    for user_set in user_sets:
        for file in user_set.files:
            if not is_reference_file(file.path):
                csvs.append(file.path)
            elif file.path.resolve() not in {r.resolve() for r in references}:
                references.append(file.path)
    table: dict[str, dict[str, str]] = {}
    for path in references:
        if not Path(path).is_file():
            raise VariantDataError(f"probe.variants.reference: no such file {path}")
        table.update(read_reference(path))
    if not csvs:
        raise VariantDataError(
            f"probe.variants.sets {[u.entry for u in user_sets]}: no DMS CSV files "
            "(only reference files)"
        )
    assays = [read_assay(path, table).subset(max_variants) for path in csvs]
    names = [a.name for a in assays]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise VariantDataError(f"probe.variants.sets: assay name(s) {repeated} appear twice")
    return assays, references
