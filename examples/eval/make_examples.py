"""Cut the example files of ``examples/eval/`` from the shared data folder (see SOURCES.md).

    python examples/eval/make_examples.py [SHARED_DATA]  # $WENSU_SHARED_DATA, else ../shared/data

Deterministic: the same shared files give byte-identical examples. Needs ``mkdssp`` (Debian
``dssp`` 4.2.2) for the DSSP example.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAIN = ["1AKI.cif", "1VFY.pdb", "6MRR.pdb", "2BUK.pdb"]  # copied decompressed
GZIPPED = ["1DIX.cif.gz", "1LCD.cif.gz"]  # copied as stored (insertion codes; 3-model NMR)
NETSURFP_ROWS = 5  # first CASP12 records of the NetSurfP-2.0 CSV
DNSS2_TARGETS = 4  # first CASP12 targets of the DNSS2 list
BACKBONE_RECORDS = 3
VARIANT_SETS = {  # DMS_id -> variants kept (fixed CRC32 subset) and how the wild type is given
    "BLAT_ECOLX_Jacquier_2013": (250, "reference"),
    "SUMO1_HUMAN_Weile_2017": (300, "fasta"),
}


def _shared(argv: list[str]) -> Path:
    if len(argv) > 1:
        return Path(argv[1])
    return Path(os.environ.get("WENSU_SHARED_DATA", HERE.parents[2] / "shared" / "data"))


def structures(shared: Path) -> None:
    out = HERE / "structures"
    out.mkdir(exist_ok=True)
    files = shared / "structure" / "pdb_entries" / "files"
    for name in PLAIN:
        (out / name).write_bytes(gzip.decompress((files / f"{name}.gz").read_bytes()))
    for name in GZIPPED:
        shutil.copyfile(files / name, out / name)


def _tokens(field: str) -> list[str]:
    return field.split()


def netsurfp_csv(shared: Path) -> None:
    """``id,seq,q3,q8`` with ``-`` where NetSurfP marks a residue unresolved (disorder 0)."""
    source = shared / "structure/secondary_structure/netsurfp2_prottrans/CASP12_HHblits.csv.gz"
    with io.TextIOWrapper(gzip.open(source, "rb"), encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        col = {h: i for i, h in enumerate(header)}
        rows = []
        for number, row in enumerate(reader, start=1):
            if number > NETSURFP_ROWS:
                break
            seq = "".join(_tokens(row[col["input"]]))
            resolved = [float(t) == 1.0 for t in _tokens(row[col["disorder"]])]
            q3, q8 = (
                "".join(
                    c if ok else "-" for c, ok in zip(_tokens(row[col[k]]), resolved, strict=True)
                )
                for k in ("dssp3", "dssp8")
            )
            rows.append([f"CASP12_row{number}", seq, q3, q8])
    with open(HERE / "ss" / "casp12_netsurfp.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "seq", "q3", "q8"])
        writer.writerows(rows)


def three_line_fasta(shared: Path) -> None:
    """DNSS2 CASP12 targets as ``>id / sequence / 8-state labels``."""
    folder = shared / "structure/secondary_structure/dnss2_casp/CASP12"
    targets = (folder / "CASP12.list").read_text().split()[:DNSS2_TARGETS]
    with tarfile.open(folder / "seq_labels.tar.gz", "r:gz") as archive:
        files = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        lines = []
        for target in targets:
            text = archive.extractfile(files[f"{target}.8class.ssa"]).read().decode("ascii")
            rows = [r.split("\t") for r in text.splitlines() if r.strip() and not r.startswith("#")]
            lines += [f">{target}", "".join(r[1] for r in rows), "".join(r[2] for r in rows)]
    (HERE / "ss" / "dnss2_casp12.fasta").write_text("\n".join(lines) + "\n", encoding="ascii")


def dssp_output() -> None:
    """Classic DSSP output of 1AKI (mkdssp 4.2.2); the date line is fixed for reproducibility."""
    source = HERE / "structures" / "1AKI.cif"
    target = HERE / "ss" / "1AKI.dssp"
    subprocess.run(["mkdssp", "--output-format", "dssp", str(source), str(target)], check=True)
    lines = target.read_text(encoding="ascii").splitlines(keepends=True)
    lines[0] = lines[0].split("DATE=")[0] + "DATE=2026-11-23        .\n"
    target.write_text("".join(lines), encoding="ascii")


def _nan(value):
    return math.nan if value is None else value


def backbones(shared: Path) -> None:
    """TS50 records in the per-residue [N, CA, C, O] layout; CATH-103 records converted to the
    CATH/GVP ``chain_set.jsonl`` layout (``coords: {N: [...], CA: [...], C: [...], O: [...]}``,
    NaN for a missing atom, as in Ingraham et al.'s file)."""
    folder = shared / "structure/contact_sets"
    with gzip.open(folder / "ts50_gvp/ts50.json.gz", "rt", encoding="utf-8") as handle:
        ts50 = json.load(handle)[:BACKBONE_RECORDS]
    (HERE / "contacts" / "ts50_sample.json").write_text(json.dumps(ts50) + "\n", encoding="utf-8")
    path = folder / "pi_rldif/cath42_test_single_chain.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        cath = json.load(handle)[:BACKBONE_RECORDS]
    lines = []
    for record in cath:
        coords = {
            atom: [
                _nan(residue[i]) if residue[i] is not None else [math.nan] * 3
                for residue in record["coords"]
            ]
            for i, atom in enumerate(("N", "CA", "C", "O"))
        }
        lines.append(
            json.dumps(
                {
                    "seq": record["seq"],
                    "coords": coords,
                    "num_chains": 1,
                    "name": record["name"],
                    "CATH": [record["cath"]],
                }
            )
        )
    (HERE / "contacts" / "cath_sample.chain_set.jsonl").write_text("\n".join(lines) + "\n")


def _reference(shared: Path) -> dict[str, dict[str, str]]:
    path = shared / "variants" / "proteingym_v1_DMS_substitutions_reference.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["DMS_id"]: row for row in csv.DictReader(handle)}


def variants(shared: Path) -> None:
    """ProteinGym-format DMS CSVs (``mutant,mutated_sequence,DMS_score,DMS_score_bin``) cut from
    the shared sets; ``DMS_score_bin`` as shipped, or ``DMS_score >= DMS_binarization_cutoff``."""
    reference = _reference(shared)
    out = HERE / "variants"
    for folder in ("proteingym", "fasta"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    kept_reference = []
    for dms_id, (limit, how) in VARIANT_SETS.items():
        ref = reference[dms_id]
        wild_type, cutoff = ref["target_seq"], float(ref["DMS_binarization_cutoff"])
        with open(shared / "variants" / f"{dms_id}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        rows = sorted(rows, key=lambda r: zlib.crc32(r["mutant"].encode()))[:limit]
        rows.sort(key=lambda r: (int(r["mutant"][1:-1]), r["mutant"][-1]))
        folder = out / ("proteingym" if how == "reference" else "fasta")
        with open(folder / f"{dms_id}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["mutant", "mutated_sequence", "DMS_score", "DMS_score_bin"])
            for row in rows:
                position, mutant = int(row["mutant"][1:-1]), row["mutant"][-1]
                mutated = wild_type[: position - 1] + mutant + wild_type[position:]
                score = float(row["score"])
                binary = row.get("DMS_score_bin") or str(int(score >= cutoff))
                writer.writerow([row["mutant"], mutated, row["score"], binary])
        if how == "reference":
            kept_reference.append(ref)
        else:
            (folder / f"{dms_id}.fasta").write_text(f">{dms_id}\n{wild_type}\n", encoding="ascii")
    with open(out / "proteingym" / "DMS_substitutions.csv", "w", newline="", encoding="utf-8") as h:
        writer = csv.DictWriter(h, fieldnames=list(kept_reference[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept_reference)


def main(argv: list[str]) -> None:
    shared = _shared(argv)
    for folder in ("ss", "contacts"):
        (HERE / folder).mkdir(exist_ok=True)
    structures(shared)
    netsurfp_csv(shared)
    three_line_fasta(shared)
    dssp_output()
    backbones(shared)
    variants(shared)


if __name__ == "__main__":
    main(sys.argv)
