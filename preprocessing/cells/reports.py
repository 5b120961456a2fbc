"""What a cells run leaves next to its shards: TSV reports, panels, statistics and the manifest."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from wensu.data.cells import CELLS_KIND
from wensu.data.shards import FORMAT_VERSION, SPLITS, sha256_file, write_text_atomic

from ..errors import AccountingError
from .duplicates import DuplicateCell
from .h5ad import H5adCells
from .scan import CODE, FILTER_REASONS, QUARANTINE_REASONS, FileScan
from .vocab import GeneVocab
from .workdir import write_json

COUNT_KEYS = ("read", "written", "duplicates", "filtered", "quarantined")


def _tsv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_quarantine(output: Path, files: list[H5adCells], scans: list[FileScan]) -> None:
    """``quarantine.tsv``: dataset, cell id, reason for every quarantined cell."""
    rows = []
    for cells, scan in zip(files, scans, strict=True):
        for reason in QUARANTINE_REASONS:
            rows += [
                (cells.dataset, cells.cell_ids[i], reason)
                for i in np.flatnonzero(scan.codes == CODE[reason])
            ]
    _tsv(output / "quarantine.tsv", ("dataset", "cell_id", "reason"), rows)


def write_duplicates(output: Path, duplicates: list[DuplicateCell]) -> None:
    """``duplicates.tsv``: each dropped copy, the copy kept and the rule that matched them."""
    rows = [(d.dataset, d.cell_id, d.kept_dataset, d.kept_cell_id, d.rule) for d in duplicates]
    _tsv(
        output / "duplicates.tsv",
        ("dataset", "cell_id", "kept_dataset", "kept_cell_id", "rule"),
        rows,
    )


def write_genes_dropped(
    output: Path,
    files: list[H5adCells],
    scans: list[FileScan],
    vocab: GeneVocab,
    pooled: dict[str, int] | None,
) -> None:
    """``genes_dropped.tsv``: per file, each gene not tokenised and why (``below_min_cells``
    when the run built the vocabulary, ``not_in_vocab`` for a given one, ``no_symbol``)."""
    rows = []
    for cells, scan in zip(files, scans, strict=True):
        for ensembl, reason in cells.dropped_genes.items():
            rows.append((cells.dataset, ensembl, reason, "", ""))
        for symbol, n in zip(cells.symbols, scan.gene_cells, strict=True):
            if symbol not in vocab:
                reason = "below_min_cells" if pooled is not None else "not_in_vocab"
                total = pooled[symbol] if pooled is not None else ""
                rows.append((cells.dataset, symbol, reason, int(n), total))
    header = ("dataset", "gene", "reason", "cells_expressing_in_file", "cells_expressing_pooled")
    _tsv(output / "genes_dropped.tsv", header, rows)


def write_panels(output: Path, files: list[H5adCells], vocab: GeneVocab) -> None:
    """``panels.json``: per dataset, the sorted vocabulary ids its file measures. A gene absent
    from a panel was not measured there (unknown), which is not the same as expressed at 0."""
    panels = {}
    for cells in files:
        ids = vocab.lookup(list(cells.symbols))
        panels[cells.dataset] = sorted(int(i) for i in ids[ids >= 0])
    write_json(output / "panels.json", panels)


def total_counts(results: list[dict]) -> dict:
    """Counts summed over files, with the accounting invariant checked per file and in total."""
    totals: dict = dict.fromkeys(COUNT_KEYS, 0)
    filtered: Counter = Counter()
    quarantined: Counter = Counter()
    for result in results:
        stats = result["stats"]
        if stats["read"] != sum(stats[k] for k in COUNT_KEYS[1:]):
            raise AccountingError(f"cells lost or double-counted in one input: {stats}")
        for key in COUNT_KEYS:
            totals[key] += stats[key]
        filtered.update(stats["filtered_by_reason"])
        quarantined.update(stats["quarantined_by_reason"])
    totals["filtered_by_reason"] = {r: filtered[r] for r in FILTER_REASONS if filtered[r]}
    totals["quarantined_by_reason"] = {
        r: quarantined[r] for r in QUARANTINE_REASONS if quarantined[r]
    }
    return totals


def split_summary(results: list[dict]) -> dict:
    """Per split: records, tokens and the shard entries in order."""
    out = {s: {"records": 0, "tokens": 0, "shards": []} for s in SPLITS}
    for result in results:
        for split in SPLITS:
            for entry in result["shards"][split]:
                out[split]["shards"].append(entry)
                out[split]["records"] += entry["records"]
                out[split]["tokens"] += entry["tokens"]
    return out


def write_stats(
    output: Path,
    files: list[H5adCells],
    results: list[dict],
    vocab: GeneVocab,
    *,
    built_vocab: bool,
    medians: np.ndarray | None,
) -> None:
    """``stats.json``: per dataset counts and gene coverage, per split token and label counts."""
    splits = {}
    for split in SPLITS:
        parts = [r["stats"]["splits"][split] for r in results]
        cells = sum(p["cells"] for p in parts)
        tokens = sum(p["tokens"] for p in parts)
        labels: dict[str, Counter] = {}
        for part in parts:
            for column, counts in part["labels"].items():
                labels.setdefault(column, Counter()).update(counts)
        splits[split] = {
            "cells": cells,
            "tokens": tokens,
            "mean_tokens_per_cell": tokens / cells if cells else 0.0,
            "max_tokens_per_cell": max((p["max_tokens"] for p in parts), default=0),
            "bins": [int(sum(v)) for v in zip(*(p["bins"] for p in parts), strict=True)],
            "labels": {c: dict(sorted(v.items())) for c, v in labels.items()},
        }
    datasets = {}
    for cells, result in zip(files, results, strict=True):
        stats = {k: v for k, v in result["stats"].items() if k != "splits"}
        stats["split_cells"] = {s: result["stats"]["splits"][s]["cells"] for s in SPLITS}
        datasets[cells.dataset] = stats
    stats = {
        "datasets": datasets,
        "splits": splits,
        "vocab": {"size": len(vocab), "genes": len(vocab.genes), "built_from_inputs": built_vocab},
        "warnings": [w for cells in files for w in cells.warnings],
    }
    if medians is not None:
        stats["gene_medians"] = dict(zip(vocab.genes, (float(m) for m in medians), strict=True))
    write_json(output / "stats.json", stats)


def build_manifest(
    output: Path,
    *,
    fingerprint: str,
    inputs: list[dict],
    config: dict,
    vocab: GeneVocab,
    label_columns: list[str],
    results: list[dict],
) -> dict:
    """The dataset's ``manifest.json`` content (``kind: "cells"``)."""
    splits = split_summary(results)
    counts = total_counts(results)
    written = sum(s["records"] for s in splits.values())
    if written != counts["written"]:
        raise AccountingError(
            f"{written} cells in shards but {counts['written']} counted as written"
        )
    return {
        "format_version": FORMAT_VERSION,
        "kind": CELLS_KIND,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": fingerprint,
        "inputs": inputs,
        "config": config,
        "vocab": "vocab.json",
        "vocab_size": len(vocab),
        "vocab_sha256": sha256_file(output / "vocab.json"),
        "label_columns": label_columns,
        "splits": splits,
        "counts": counts,
        "panels": "panels.json",
        "stats": "stats.json",
        "quarantine": "quarantine.tsv",
        "duplicates": "duplicates.tsv",
        "genes_dropped": "genes_dropped.tsv",
    }
