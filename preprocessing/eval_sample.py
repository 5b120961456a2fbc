"""Build the embedded evaluation sample (``wensu/resources/eval_sample/``) from the full data.

    python -m wensu.preprocessing.eval_sample /path/to/data wensu/resources/eval_sample

The sample is a small, real cut of the built-in sets in the same layout (so the probes read it
unchanged): enough for ``wensu-eval subset=fast`` to run SS3/SS8, contacts, AMR, perplexity and
one variant set with no network and nothing configured. Records are chosen deterministically
(CRC32 of their id, smallest files for structures); ``SAMPLE.json`` lists what was kept.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path

SS = "structure/secondary_structure"
FLIP_ZIP = f"{SS}/flip_prott5/secondary_structure_splits.zip"
CULLPDB = f"{SS}/icml2014_cullpdb_kaggle_mirror/cullpdb6133filtered_train.csv.gz"
CB513 = f"{SS}/netsurfp2_prottrans/CB513_HHblits.csv.gz"
CATH = "structure/contact_sets/pi_rldif/cath42_test_single_chain.json.gz"
PDB_INDEX = "structure/pdb_entries/index.csv"
AMR_TSV = "amr/amrfinderplus_2024-07-22.1_proteins_labelled.tsv"
SCOP = "sequences/scop_mmseqs2/mmseqs2_DB_scop_domains.fasta.gz"
VARIANT_SET = "BLAT_ECOLX_Jacquier_2013"

SIZES = {
    "flip_train": 170,
    "flip_valid": 50,
    "flip_test": 20,
    "cullpdb": 260,
    "cb513": 100,
    "cath": 24,
    "pdb_entries": 14,
    "amr_per_class": 20,
    "amr_other": 70,
    "scop": 160,
}


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _write(out: Path, rel: str, data: bytes) -> None:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fasta_records(text: str) -> list[tuple[str, str]]:
    records, header, lines = [], None, []
    for line in text.splitlines():
        if line.startswith(">"):
            if header is not None:
                records.append((header, "".join(lines)))
            header, lines = line, []
        elif line:
            lines.append(line)
    if header is not None:
        records.append((header, "".join(lines)))
    return records


def flip_zip(data: Path, out: Path) -> dict:
    with zipfile.ZipFile(data / FLIP_ZIP) as archive:
        members = {
            m: archive.read(f"splits/{m}.fasta").decode() for m in ("sequences", "sampled", "mask")
        }
    labels = _fasta_records(members["sampled"])
    split_of = {}
    for header, _ in labels:
        name, *tags = header[1:].split()
        tags = dict(t.split("=", 1) for t in tags)
        split = (
            "test"
            if tags["SET"] == "test"
            else ("valid" if tags["VALIDATION"] == "True" else "train")
        )
        split_of[name] = split
    keep: set[str] = set()
    for split in ("train", "valid", "test"):
        names = sorted((n for n, s in split_of.items() if s == split), key=_crc)
        keep |= set(names[: SIZES[f"flip_{split}"]])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for member, text in members.items():
            kept = [(h, s) for h, s in _fasta_records(text) if h[1:].split()[0] in keep]
            body = "".join(f"{h}\n{s}\n" for h, s in kept)
            info = zipfile.ZipInfo(f"splits/{member}.fasta", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, body, compress_type=zipfile.ZIP_DEFLATED)
    _write(out, FLIP_ZIP, buffer.getvalue())
    counts = defaultdict(int)
    for name in keep:
        counts[split_of[name]] += 1
    return dict(counts)


def csv_rows_gz(data: Path, out: Path, rel: str, limit: int, key_column: int) -> int:
    """The header and the ``limit`` rows of smallest CRC32 of one column, in file order."""
    text = gzip.decompress((data / rel).read_bytes()).decode()
    lines = text.splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    keyed = [(next(csv.reader([r]))[key_column], i) for i, r in enumerate(rows)]
    chosen = sorted(i for _, i in sorted(keyed, key=lambda k: (_crc(k[0]), k[1]))[:limit])
    _write(out, rel, _gzip_bytes((header + "".join(rows[i] for i in chosen)).encode()))
    return len(chosen)


def cath_json(data: Path, out: Path) -> int:
    records = json.loads(gzip.decompress((data / CATH).read_bytes()))
    chosen = sorted(records, key=lambda r: _crc(r["name"]))[: SIZES["cath"]]
    _write(out, CATH, _gzip_bytes(json.dumps(chosen, separators=(",", ":")).encode()))
    return len(chosen)


def pdb_entries(data: Path, out: Path) -> list[str]:
    rows = list(csv.DictReader((data / PDB_INDEX).open(encoding="utf-8", newline="")))
    folder = data / "structure/pdb_entries"
    chosen = sorted(rows, key=lambda r: ((folder / r["file"]).stat().st_size, r["pdb_id"]))
    chosen = chosen[: SIZES["pdb_entries"]]
    names = {r["pdb_id"] for r in chosen}
    for row in chosen:
        row["similar_to"] = ";".join(
            s for s in row.get("similar_to", "").split(";") if s and s.split(":")[0] in names
        )
        _write(out, f"structure/pdb_entries/{row['file']}", (folder / row["file"]).read_bytes())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(chosen, key=lambda r: rows.index(r)))
    _write(out, PDB_INDEX, buffer.getvalue().encode())
    return sorted(names)


def amr_table(data: Path, out: Path) -> dict:
    """Every drug class with >= 20 proteins (<= 1000 aa) keeps 20, round-robin over families so
    family-grouped CV still has folds; plus non-AMR (virulence/stress) proteins."""
    lines = (data / AMR_TSV).read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    col = {name: i for i, name in enumerate(header)}
    by_class: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    other: list[int] = []
    for i, line in enumerate(lines[1:], 1):
        f = line.rstrip("\n").split("\t")
        if len(f[col["sequence"]]) > 1000:
            continue
        if f[col["type"]] == "AMR" and f[col["drug_class"]]:
            by_class[f[col["drug_class"]]][f[col["parent_node"]]].append(i)
        elif f[col["type"]] in ("VIRULENCE", "STRESS"):
            other.append(i)
    chosen: list[int] = []
    for families in by_class.values():
        if sum(len(v) for v in families.values()) < SIZES["amr_per_class"]:
            continue
        queues = [sorted(v, key=lambda i: _crc(lines[i])) for _, v in sorted(families.items())]
        picked: list[int] = []
        while len(picked) < SIZES["amr_per_class"]:
            for queue in queues:
                if queue and len(picked) < SIZES["amr_per_class"]:
                    picked.append(queue.pop(0))
        chosen += picked
    chosen += sorted(other, key=lambda i: _crc(lines[i]))[: SIZES["amr_other"]]
    _write(out, AMR_TSV, (lines[0] + "".join(lines[i] for i in sorted(chosen))).encode())
    return {
        "proteins": len(chosen),
        "classes": sum(
            1 for f in by_class.values() if sum(map(len, f.values())) >= SIZES["amr_per_class"]
        ),
    }


def scop(data: Path, out: Path) -> int:
    records = _fasta_records(gzip.decompress((data / SCOP).read_bytes()).decode())
    chosen = sorted(records, key=lambda r: _crc(r[0]))[: SIZES["scop"]]
    _write(out, SCOP, _gzip_bytes("".join(f"{h}\n{s}\n" for h, s in chosen).encode()))
    return len(chosen)


def variants(data: Path, out: Path) -> str:
    lines = (data / "variants/sets.csv").read_text().splitlines(keepends=True)
    row = next(line for line in lines[1:] if line.startswith(VARIANT_SET + ","))
    _write(out, "variants/sets.csv", (lines[0] + row).encode())
    _write(out, f"variants/{VARIANT_SET}.csv", (data / f"variants/{VARIANT_SET}.csv").read_bytes())
    return VARIANT_SET


def build(data: Path, out: Path) -> dict:
    contents = {
        "ss": {
            "flip": flip_zip(data, out),
            "cullpdb": csv_rows_gz(data, out, CULLPDB, SIZES["cullpdb"], key_column=1),
            "cb513": csv_rows_gz(data, out, CB513, SIZES["cb513"], key_column=0),
        },
        "contacts": {"cath103": cath_json(data, out), "pdb_entries": pdb_entries(data, out)},
        "amr": amr_table(data, out),
        "scop": {"sequences": scop(data, out)},
        "variants": {"sets": [variants(data, out)]},
    }
    manifest = {"note": "a small real cut of the built-in sets; see SOURCES.md", "sets": contents}
    _write(out, "SAMPLE.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
