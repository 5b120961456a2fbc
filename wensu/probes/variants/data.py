"""Deep-mutational-scanning sets for zero-shot variant-effect scoring.

Reads the ``sets.csv`` index (name, file, protein, wild-type sequence, offset) and each set's
``mutant,score`` CSV, parses mutant names (``A42G``, or ``A42G:L60P`` for several substitutions)
and checks every wild-type residue against the sequence. Any problem is a
:class:`VariantDataError` naming the file (or set), the line and the reason; nothing is dropped
silently.

Positions follow the index's ``offset``: the first residue of ``wild_type_sequence`` carries the
number ``offset`` in mutant names (``offset = 1``: 1-based, ``X<p>Y`` means ``sequence[p-1] == X``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wensu.probes.common.context import stable_subset
from wensu.probes.common.errors import ProbeDataError

VARIANTS_FOLDER = "variants"
INDEX_NAME = "sets.csv"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
INDEX_COLUMNS = ("name", "file", "uniprot_id", "wild_type_sequence", "offset")
SET_COLUMNS = ("mutant", "score")
_SUBSTITUTION = re.compile(r"^([A-Za-z*])(\d+)([A-Za-z*])$")
_LEADING_INT = re.compile(r"^\s*(-?\d+)")


class VariantDataError(ProbeDataError):
    """A variant set, its index or a mutant name is invalid; the message names where and why."""


@dataclass(frozen=True)
class Substitution:
    """One amino-acid substitution; ``position`` is the number written in the mutant name."""

    wild_type: str
    position: int
    mutant: str

    def __str__(self) -> str:
        return f"{self.wild_type}{self.position}{self.mutant}"


Mutant = tuple[Substitution, ...]


def parse_mutant(text: str, *, where: str = "mutant") -> Mutant:
    """Parse ``A42G`` or ``A42G:L60P`` into substitutions (distinct positions, standard residues).

    ``where`` names the record in error messages (e.g. ``"GFP.csv line 12"``).
    """
    name = text.strip()
    if not name:
        raise VariantDataError(f"{where}: empty mutant name")
    substitutions = []
    for part in name.split(":"):
        match = _SUBSTITUTION.match(part.strip())
        if match is None:
            raise VariantDataError(
                f"{where}: malformed mutant {text!r} (expected e.g. 'A42G' or 'A42G:L60P')"
            )
        wild_type, position, mutant = match[1].upper(), int(match[2]), match[3].upper()
        for residue in (wild_type, mutant):
            if residue not in AMINO_ACIDS:
                raise VariantDataError(
                    f"{where}: mutant {text!r} has residue {residue!r}, not one of the 20 "
                    f"standard amino acids {AMINO_ACIDS}"
                )
        substitutions.append(Substitution(wild_type, position, mutant))
    positions = [s.position for s in substitutions]
    if len(set(positions)) != len(positions):
        raise VariantDataError(f"{where}: mutant {text!r} names the same position twice")
    return tuple(substitutions)


def check_mutant(mutant: Mutant, sequence: str, offset: int, *, where: str) -> None:
    """Raise :class:`VariantDataError` unless every wild-type residue matches ``sequence``."""
    last = offset + len(sequence) - 1
    for s in mutant:
        index = s.position - offset
        if not 0 <= index < len(sequence):
            raise VariantDataError(
                f"{where}: position {s.position} of {s} is outside the wild-type sequence "
                f"(positions {offset}..{last} with offset {offset})"
            )
        if sequence[index] != s.wild_type:
            raise VariantDataError(
                f"{where}: wild-type residue mismatch at position {s.position}: the mutant {s} "
                f"says {s.wild_type}, the sequence has {sequence[index]} there (offset {offset})"
            )


def mutated_sequence(sequence: str, mutant: Mutant, offset: int = 1) -> str:
    """The wild-type ``sequence`` with the substitutions of ``mutant`` applied."""
    residues = list(sequence)
    for s in mutant:
        residues[s.position - offset] = s.mutant
    return "".join(residues)


@dataclass(frozen=True)
class SetInfo:
    """One row of ``sets.csv``: a DMS assay and its wild-type protein."""

    name: str
    path: Path
    protein: str  # UniProt entry name; sets of the same protein are averaged before proteins
    sequence: str
    offset: int
    n_variants: int | None
    description: str = ""
    group: str = ""
    reference: str = ""


@dataclass(frozen=True)
class VariantSet:
    """A DMS set: mutant names, parsed substitutions, measured scores and their CSV lines."""

    info: SetInfo
    names: tuple[str, ...]
    mutants: tuple[Mutant, ...]
    scores: np.ndarray  # float64, higher = fitter
    lines: np.ndarray  # 1-based line numbers in the CSV (header = line 1)

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, limit: int | None) -> VariantSet:
        """At most ``limit`` variants: a fixed pseudo-random subset (CRC32 of the mutant name)."""
        keep = stable_subset(range(len(self)), limit, key=lambda i: self.names[i])
        keep = np.sort(np.asarray(keep, dtype=np.int64))
        return replace(
            self,
            names=tuple(self.names[i] for i in keep),
            mutants=tuple(self.mutants[i] for i in keep),
            scores=self.scores[keep],
            lines=self.lines[keep],
        )


def variants_dir(data_dir: str | Path) -> Path:
    """The folder holding ``sets.csv``: ``data_dir`` itself or its ``variants/`` subfolder."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / VARIANTS_FOLDER):
        if (candidate / INDEX_NAME).is_file():
            return candidate
    raise VariantDataError(
        f"{data_dir}: no {INDEX_NAME} here or in {data_dir / VARIANTS_FOLDER} "
        "(pass the data directory or its variants folder)"
    )


def _open_csv(path: Path, required: Sequence[str]) -> tuple[csv.DictReader, object]:
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as error:
        raise VariantDataError(f"{path}: cannot open ({error.strerror or error})") from None
    reader = csv.DictReader(handle)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        handle.close()
        raise VariantDataError(
            f"{path}: missing column(s) {missing}; found {reader.fieldnames or []}"
        )
    return reader, handle


def _int_field(value: str, where: str, column: str, leading: bool = False) -> int:
    match = _LEADING_INT.match(value or "") if leading else None
    try:
        return int(match[1]) if match else int(value)
    except (TypeError, ValueError):
        raise VariantDataError(f"{where}: column {column!r} is not an integer: {value!r}") from None


def read_index(data_dir: str | Path) -> list[SetInfo]:
    """All sets listed in ``sets.csv`` (``data_dir``: data directory or its variants folder)."""
    folder = variants_dir(data_dir)
    index_path = folder / INDEX_NAME
    reader, handle = _open_csv(index_path, INDEX_COLUMNS)
    infos: list[SetInfo] = []
    with handle:
        for line, row in enumerate(reader, start=2):
            where = f"{index_path} line {line}"
            name = (row["name"] or "").strip()
            sequence = (row["wild_type_sequence"] or "").strip().upper()
            if not name or not (row["file"] or "").strip():
                raise VariantDataError(f"{where}: empty 'name' or 'file'")
            if not sequence or not sequence.isalpha() or not sequence.isascii():
                raise VariantDataError(f"{where} ({name}): invalid wild_type_sequence")
            count = (row.get("n_variants") or "").strip()
            infos.append(
                SetInfo(
                    name=name,
                    path=folder / row["file"].strip(),
                    protein=(row["uniprot_id"] or name).strip(),
                    sequence=sequence,
                    offset=_int_field(row["offset"], where, "offset", leading=True),
                    n_variants=_int_field(count, where, "n_variants") if count else None,
                    description=(row.get("protein") or "").strip(),
                    group=(row.get("group") or "").strip(),
                    reference=(row.get("reference") or "").strip(),
                )
            )
    names = [info.name for info in infos]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise VariantDataError(f"{index_path}: set name(s) listed twice: {duplicated}")
    return infos


def read_variant_set(info: SetInfo) -> VariantSet:
    """Read and validate one set's CSV (every row parsed and checked against the sequence)."""
    reader, handle = _open_csv(info.path, SET_COLUMNS)
    names, mutants, scores, lines = [], [], [], []
    first_line: dict[str, int] = {}
    with handle:
        for line, row in enumerate(reader, start=2):
            where = f"set {info.name} ({info.path.name}) line {line}"
            name = (row["mutant"] or "").strip()
            mutant = parse_mutant(name, where=where)
            check_mutant(mutant, info.sequence, info.offset, where=where)
            try:
                score = float(row["score"])
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise VariantDataError(f"{where}: score {row['score']!r} is not a finite number")
            if name in first_line:
                raise VariantDataError(
                    f"{where}: mutant {name} already listed on line {first_line[name]}"
                )
            first_line[name] = line
            names.append(name)
            mutants.append(mutant)
            scores.append(score)
            lines.append(line)
    if info.n_variants is not None and len(names) != info.n_variants:
        raise VariantDataError(
            f"set {info.name} ({info.path}): {len(names)} variants in the file but "
            f"{INDEX_NAME} says n_variants = {info.n_variants}"
        )
    if not names:
        raise VariantDataError(f"set {info.name} ({info.path}): no variants")
    return VariantSet(
        info=info,
        names=tuple(names),
        mutants=tuple(mutants),
        scores=np.asarray(scores, dtype=np.float64),
        lines=np.asarray(lines, dtype=np.int64),
    )


def load_variant_sets(
    data_dir: str | Path, names: Sequence[str] | None = None, max_variants: int | None = None
) -> list[VariantSet]:
    """The sets named (all of ``sets.csv`` when None), each capped at ``max_variants``."""
    infos = read_index(data_dir)
    by_name = {info.name: info for info in infos}
    if names is None:
        chosen = infos
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise VariantDataError(
                f"unknown variant set(s) {unknown}; {INDEX_NAME} lists {sorted(by_name)}"
            )
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    return [read_variant_set(info).subset(max_variants) for info in chosen]
