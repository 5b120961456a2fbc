"""Build ``wensu/datasets/registry.json`` from a data folder laid out as wensu expects.

    python -m wensu.preprocessing.data_registry /path/to/data > wensu/datasets/registry.json

Every file gets its stored SHA-256 and size; files that are verbatim copies of a public file
(possibly gzipped here) also get the file's URL at the pinned commit named in the folder's
SOURCES.md, the SHA-256 of those bytes (the stored file, or its decompressed content) and the
step that stores it. The upstream rules below restate those SOURCES.md entries.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

# name, folders, description, licence, provenance
SETS = [
    (
        "ss",
        ["structure/secondary_structure"],
        "secondary structure: NetSurfP-2.0 CB513/TS115/CASP12, FLIP train/valid/NEW364, "
        "CullPDB-6133, DNSS2 CASP11/12",
        "academic (NetSurfP-2.0/ProtTrans), AFL-3.0 (FLIP), unstated (CullPDB mirror, DNSS2)",
        "DeepCriticalLearning@17fb603, J-SNACKKB/FLIP@62cace8, mazzeratziii mirror@8ddc264, "
        "multicom-toolbox/DNSS2@68e5c8a",
    ),
    (
        "contacts",
        [
            "structure/pdb_entries",
            "structure/contact_sets",
            "structure/overlaps.tsv",
            "structure/SOURCES.md",
            "structure/SHA256SUMS",
        ],
        "structures for contacts: 101 PDB entries, TS50, CATH-4.2 test chains, Kortemme Pfam-40",
        "wwPDB CC0; MIT (gvp-pytorch, covariation); none stated (pi-rldif)",
        "per-entry repositories in pdb_entries/index.csv; drorlab/gvp-pytorch@82af6b2; "
        "flagshippioneering/pi-rldif@6539f56; Kortemme-Lab/covariation@e806290",
    ),
    (
        "amr",
        ["amr"],
        "NCBI AMRFinderPlus 2024-07-22.1 reference proteins + labelled table",
        "public domain (NCBI)",
        "MDU-PHL/abritamr@f25749c abritamr/db/amrfinderplus/data/2024-07-22.1",
    ),
    (
        "scop",
        ["sequences/scop_mmseqs2"],
        "SCOP/ASTRAL domain sequences (held-out perplexity)",
        "SCOPe terms; MMseqs2 MIT",
        "soedinglab/MMseqs2@f04c3ae data/DB.fasta",
    ),
    (
        "variants",
        ["variants"],
        "16 ProteinGym v1 DMS substitution sets + index and reference file",
        "ProteinGym MIT; per-assay licences in variants/sets.csv",
        "per-set repository/commit in variants/sets.csv",
    ),
    (
        "pbmc",
        ["singlecell"],
        "16 human PBMC AnnData files (raw counts, harmonised cell types)",
        "per-file (10x Genomics CC BY 4.0, GEO public), see singlecell/SOURCES.md",
        "converted by wensu from the public releases named in singlecell/SOURCES.md",
    ),
    (
        "proteomes",
        ["sequences/uniprot_proteomes"],
        "15 UniProtKB proteomes (pretraining corpus)",
        "CC BY 4.0 (UniProt)",
        "skinnider/CFdb-searches@1f84d40 data/fasta/filtered",
    ),
    (
        "prokka_sprot",
        ["sequences/prokka_sprot"],
        "Swiss-Prot archaea / viruses / mitochondria subsets",
        "CC BY 4.0 (UniProt); Prokka GPL-3.0",
        "tseemann/prokka@851237b db/kingdom/*/sprot",
    ),
    (
        "uniparc",
        ["sequences/uniparc", "sequences/SOURCES.md"],
        "UniParc-format FASTA and XML samples",
        "CC BY 4.0 (UniProt)",
        "see sequences/SOURCES.md",
    ),
]


def _github(repo: str, commit: str) -> Callable[[str], str]:
    return lambda path: RAW.format(repo=repo, commit=commit, path=path)


def upstream_rules(root: Path) -> dict[str, tuple[str, str]]:
    """Stored path -> (URL, prepare) for files that are verbatim public files."""
    rules: dict[str, tuple[str, str]] = {}
    ss = "structure/secondary_structure"
    dcl = _github(
        "XinshaoAmosWang/DeepCriticalLearning", "17fb603ed9a464ed386b9462b9e3a74aedfb84ae"
    )
    for name in ("CB513", "TS115", "CASP12"):
        rules[f"{ss}/netsurfp2_prottrans/{name}_HHblits.csv.gz"] = (
            dcl(f"dataset/{name}_HHblits.csv"),
            "gzip",
        )
    flip = _github("J-SNACKKB/FLIP", "62cace8735f5610e2743cf06ce0f944b37fffaa6")
    rules[f"{ss}/flip_prott5/secondary_structure_splits.zip"] = (
        flip("splits/secondary_structure/splits.zip"),
        "copy",
    )
    cull = _github(
        "mazzeratziii/Predicting-the-secondary-structure-of-proteins",
        "8ddc26493f2afd733eedd88b3bd51c4316f76f2c",
    )
    rules[f"{ss}/icml2014_cullpdb_kaggle_mirror/cullpdb6133filtered_train.csv.gz"] = (
        cull("dataset/train.csv"),
        "gzip",
    )
    rules[f"{ss}/icml2014_cullpdb_kaggle_mirror/cb513_icml2014_test.csv.gz"] = (
        cull("dataset/test.csv"),
        "gzip",
    )
    dnss2 = _github("multicom-toolbox/DNSS2", "68e5c8a27f9e1c062a66e19880e714f247e68ab4")
    for casp in ("CASP11", "CASP12"):
        for path in sorted((root / ss / "dnss2_casp" / casp).iterdir()):
            rules[f"{ss}/dnss2_casp/{casp}/{path.name}"] = (
                dnss2(f"train_DNSS2/datasets/blind_testdata/{casp}/{path.name}"),
                "copy",
            )
    with open(root / "structure/pdb_entries/index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["byte_identical"] == "yes":
                url = _github(row["source_repo"], row["source_commit"])(row["source_path"])
                rules[f"structure/pdb_entries/{row['file']}"] = (url, "gzip")
    gvp = _github("drorlab/gvp-pytorch", "82af6b22eaf8311c15733117b0071408d24ed877")
    rules["structure/contact_sets/ts50_gvp/ts50.json.gz"] = (gvp("data/ts50.json"), "gzip")
    rules["structure/contact_sets/ts50_gvp/ts50remove.txt"] = (gvp("data/ts50remove.txt"), "copy")
    rldif = _github("flagshippioneering/pi-rldif", "6539f564ed94828170f61a112716dfc7794f011d")
    rules["structure/contact_sets/pi_rldif/cath_single_chain.csv.gz"] = (
        rldif("data/raw_data/cath_single_chain.csv"),
        "gzip",
    )
    kortemme = _github("Kortemme-Lab/covariation", "e806290c96d08474e8043aff118f3568d526b2e7")
    rules["structure/contact_sets/kortemme_pfam40/domains.csv"] = (
        kortemme("input/csv/domains.csv"),
        "copy",
    )
    for path in sorted((root / "structure/contact_sets/kortemme_pfam40/files").glob("*.pdb.gz")):
        pfam, rest = path.name.split("_", 1)
        rules[f"structure/contact_sets/kortemme_pfam40/files/{path.name}"] = (
            kortemme(f"input/domains/{pfam}/{rest.removesuffix('.gz')}"),
            "gzip",
        )
    abritamr = _github("MDU-PHL/abritamr", "f25749cca1638c7354eb5a1933c5d3337148af64")
    for name in ("AMRProt", "fam.tab", "version.txt", "database_format_version.txt"):
        rules[f"amr/ncbi_amrfinderplus_2024-07-22.1/{name}"] = (
            abritamr(f"abritamr/db/amrfinderplus/data/2024-07-22.1/{name}"),
            "copy",
        )
    mmseqs = _github("soedinglab/MMseqs2", "f04c3aed6ab0a7000fff0a46a462a8fc690f3fe3")
    rules["sequences/scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz"] = (
        mmseqs("data/DB.fasta"),
        "gzip",
    )
    cfdb = _github("skinnider/CFdb-searches", "1f84d40a997bfa8d8808a4e5cab9c201422976f3")
    for path in sorted((root / "sequences/uniprot_proteomes").glob("*.fasta.gz")):
        rules[f"sequences/uniprot_proteomes/{path.name}"] = (
            cfdb(f"data/fasta/filtered/{path.name}"),
            "copy",
        )
    prokka = _github("tseemann/prokka", "851237b56f876992fa523969c02da6a435e33844")
    for kingdom in ("Archaea", "Viruses", "Mitochondria"):
        rules[f"sequences/prokka_sprot/prokka_{kingdom}_sprot.fasta.gz"] = (
            prokka(f"db/kingdom/{kingdom}/sprot"),
            "gzip",
        )
    with open(root / "variants/sets.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if re.fullmatch(r"[0-9a-f]{40}", row["source_commit"] or ""):
                url = _github(row["source_repo"], row["source_commit"])(row["source_path"])
                rules[f"variants/{row['file']}"] = (url, "copy")
    return rules


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(root: Path, folders: list[str]) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        path = root / folder
        found += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return found


def build(root: Path) -> dict:
    rules = upstream_rules(root)
    claimed: set[str] = set()
    sets = []
    for name, folders, description, licence, source in SETS:
        files = []
        for path in _files(root, folders):
            rel = path.relative_to(root).as_posix()
            if rel in claimed:
                continue
            claimed.add(rel)
            stored = path.read_bytes()
            entry = {"path": rel, "sha256": _sha256(stored), "size": len(stored)}
            if rel in rules:
                url, prepare = rules[rel]
                content = gzip.decompress(stored) if prepare == "gzip" else stored
                entry.update(url=url, source_sha256=_sha256(content), prepare=prepare)
            files.append(entry)
        sets.append(
            {
                "name": name,
                "description": description,
                "licence": licence,
                "source": source,
                "folders": folders,
                "files": files,
            }
        )
    return {"format": 1, "sets": sets}


if __name__ == "__main__":
    json.dump(build(Path(sys.argv[1])), sys.stdout, indent=1)
    sys.stdout.write("\n")
