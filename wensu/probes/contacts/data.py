"""Loaders for the contact-evaluation sets in the data directory's ``structure/``
(``wensu-data fetch contacts``).

* ``pdb_entries``: whole PDB/mmCIF entries parsed with Bio.PDB (representative chain from
  ``index.csv``; Cβ, Cα for Gly).
* ``kortemme40``: 40 domain-cropped Pfam structures (ATOM records only, so the sequence is the
  observed residues).
* ``cath103`` / ``ts50``: backbone-only JSON (N, Cα, C, O), so the contact atom is a virtual Cβ
  computed from the backbone (Cα for Gly).

A structure that cannot give a contact map is skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wensu.probes.common.errors import ProbeDataError, SkipLog
from wensu.probes.common.structures import ChainStructure, backbone_to_structure, parse_structure
from wensu.progress import progress_bar

CONTACT_SET_PATHS = {
    "pdb_entries": "pdb_entries",
    "kortemme40": "contact_sets/kortemme_pfam40",
    "cath103": "contact_sets/pi_rldif/cath42_test_single_chain.json.gz",
    "ts50": "contact_sets/ts50_gvp/ts50.json.gz",
}


@dataclass(kw_only=True)
class ContactSet(SkipLog):
    """Parsed structures of one set plus what was skipped and why."""

    name: str
    structures: list[ChainStructure] = field(default_factory=list)

    def add(self, make) -> None:
        """Append ``make()``'s structure, or record its StructureError."""
        self.attempt(make, self.structures)


def _pdb_entry_jobs(folder: Path, drop_similar: bool) -> Iterator[tuple[Path, str, str]]:
    index = folder / "index.csv"
    if not index.exists():
        raise ProbeDataError(f"{index}: missing (expected the pdb_entries index)")
    rows = list(csv.DictReader(index.open(encoding="utf-8")))
    if not rows or not {"file", "pdb_id", "chain"} <= set(rows[0]):
        raise ProbeDataError(f"{index}: needs columns file, pdb_id, chain")
    kept: set[str] = set()
    for row in rows:
        similar = [s.split(":")[0] for s in row.get("similar_to", "").split(";") if s]
        # SOURCES.md: drop the second member of each near-duplicate pair
        if drop_similar and any(s in kept for s in similar):
            continue
        kept.add(row["pdb_id"])
        yield folder / row["file"], row["chain"], f"{row['pdb_id']}_{row['chain']}"


def _kortemme_jobs(folder: Path) -> Iterator[tuple[Path, str | None, str]]:
    for path in sorted((folder / "files").glob("*.pdb.gz")):
        parts = path.name.removesuffix(".pdb.gz").split("_")
        chain = parts[-1] if len(parts) == 3 else None
        yield path, chain, path.name.removesuffix(".pdb.gz")


def _backbone_json(path: Path) -> list[dict]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError) as err:
        raise ProbeDataError(f"{path}: not a backbone JSON list ({err})") from None
    if not isinstance(data, list):
        raise ProbeDataError(f"{path}: expected a JSON list of {{name, seq, coords}}")
    return data


def load_contact_set(
    name: str,
    root: Path,
    *,
    limit: int | None = None,
    select: str = "first",
    drop_similar: bool = True,
    show_progress: bool = True,
) -> ContactSet:
    """Load one named contact set from the ``structure/`` data folder ``root``.

    ``limit`` keeps that many structures, chosen as the first ones (``select="first"``) or, for a
    quick run, the smallest files (``select="smallest"``, parsing is the cost).
    """
    if name not in CONTACT_SET_PATHS:
        raise ProbeDataError(f"unknown contact set {name!r}; known: {sorted(CONTACT_SET_PATHS)}")
    path = Path(root) / CONTACT_SET_PATHS[name]
    if not path.exists():
        raise ProbeDataError(f"{path}: contact set {name!r} not found")
    result = ContactSet(name=name)
    if name in ("cath103", "ts50"):
        records = _backbone_json(path)
        if select == "smallest":
            records = sorted(records, key=lambda r: len(r.get("seq", "")))
        result.files.append(path)
        for record in records[:limit]:
            where = f"{path} record {record.get('name', '?')}"
            if not isinstance(record, dict) or not {"name", "seq", "coords"} <= set(record):
                result.skipped["malformed_record"] += 1
                result.errors.append(f"{where}: malformed_record (needs name, seq, coords)")
                continue
            result.add(
                lambda record=record, where=where: backbone_to_structure(
                    record["name"], record["seq"], record["coords"], where
                )
            )
        return result
    jobs: Iterable = (
        _pdb_entry_jobs(path, drop_similar) if name == "pdb_entries" else _kortemme_jobs(path)
    )
    jobs = list(jobs)
    if select == "smallest":
        jobs.sort(key=lambda job: job[0].stat().st_size)
    jobs = jobs[:limit]
    for file, chain, label in progress_bar(jobs, desc=f"parse {name}", enabled=show_progress):
        result.files.append(file)
        result.add(lambda f=file, c=chain, n=label: parse_structure(f, chain=c, name=n))
    return result
