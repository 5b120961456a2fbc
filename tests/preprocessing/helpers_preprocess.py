"""Shared helpers for the preprocessing tests: run the pipeline, read back every output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
from wensu.preprocessing import run_preprocess


def read_tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_records(output: Path) -> dict[str, dict]:
    """Every record in the shards: id -> {split, sequence, taxon, cluster, shard}."""
    manifest = json.loads((output / "manifest.json").read_text())
    records: dict[str, dict] = {}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            with h5py.File(output / shard["path"], "r") as h5:
                offsets = h5["offsets"][:]
                residues = h5["residues"][:].tobytes().decode()
                ids = [i.decode() for i in h5["ids"][:]]
                taxa = h5["taxon"][:].tolist()
                clusters = [c.decode() for c in h5["cluster"][:]] if "cluster" in h5 else None
                assert h5.attrs["split"] == split and h5.attrs["format_version"] == 1
            for k, record_id in enumerate(ids):
                assert record_id not in records, f"{record_id} written twice"
                records[record_id] = {
                    "split": split,
                    "sequence": residues[offsets[k] : offsets[k + 1]],
                    "taxon": taxa[k],
                    "cluster": clusters[k] if clusters else None,
                    "shard": shard["path"],
                }
    return records


def run_on(tmp_path: Path, files: dict[str, bytes], **settings) -> dict:
    """Write ``files`` under tmp_path/in, run the pipeline on them (in that order) and
    collect summary, manifest, quarantine/duplicates rows and shard records."""
    in_dir = tmp_path / "in"
    in_dir.mkdir(exist_ok=True)
    paths = []
    for name, data in files.items():
        path = in_dir / name
        path.write_bytes(data)
        paths.append(str(path))
    output = tmp_path / "out"
    settings.setdefault("progress", False)
    summary = run_preprocess(input=paths, output=str(output), **settings)
    return {
        "summary": summary,
        "manifest": json.loads((output / "manifest.json").read_text()),
        "quarantine": read_tsv(output / "quarantine.tsv"),
        "duplicates": read_tsv(output / "duplicates.tsv"),
        "records": read_records(output),
        "stats": json.loads((output / "stats.json").read_text()),
        "output": output,
        "paths": paths,
    }
