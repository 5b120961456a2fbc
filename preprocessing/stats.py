"""Dataset statistics (length histogram, residue composition) and the final summary table."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import numpy as np

LENGTH_EDGES = (1, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


def byte_counts(data: bytes) -> np.ndarray:
    """Occurrences of each byte value (256 int64), counting byte pairs to halve the work."""
    counts = np.zeros(256, dtype=np.int64)
    if len(data) % 2:
        counts[data[-1]] += 1
        data = data[:-1]
    if data:
        pairs = np.bincount(np.frombuffer(data, dtype=np.uint16), minlength=1 << 16)
        grid = pairs.reshape(256, 256)  # index = byte0 + 256 * byte1 on little-endian
        counts += grid.sum(axis=0) + grid.sum(axis=1)
    return counts


class SequenceStats:
    """Running length counts (exact, via bincount) and residue counts of written sequences."""

    def __init__(self) -> None:
        self.length_counts = np.zeros(1, dtype=np.int64)
        self.residue_counts = np.zeros(256, dtype=np.int64)

    def add_many(self, sequences: Iterable[bytes]) -> None:
        sequences = list(sequences)
        if not sequences:
            return
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        counts = np.bincount(lengths)
        if counts.size > self.length_counts.size:
            counts[: self.length_counts.size] += self.length_counts
            self.length_counts = counts
        else:
            self.length_counts[: counts.size] += counts
        self.residue_counts += byte_counts(b"".join(sequences))

    def merge(self, other: SequenceStats) -> SequenceStats:
        out = SequenceStats()
        size = max(self.length_counts.size, other.length_counts.size)
        out.length_counts = np.zeros(size, dtype=np.int64)
        out.length_counts[: self.length_counts.size] += self.length_counts
        out.length_counts[: other.length_counts.size] += other.length_counts
        out.residue_counts = self.residue_counts + other.residue_counts
        return out

    def to_dict(self) -> dict:
        """Counts, length summary/histogram and composition as plain JSON types."""
        counts = self.length_counts
        records = int(counts.sum())
        residues = int(self.residue_counts.sum())
        out: dict = {"records": records, "residues": residues}
        if records == 0:
            return out
        values = np.arange(counts.size)
        cumulative = np.cumsum(counts)
        nonzero = np.flatnonzero(counts)
        lower = int(np.searchsorted(cumulative, (records + 1) // 2))
        upper = int(np.searchsorted(cumulative, records // 2 + 1))
        edges = [e for e in LENGTH_EDGES if e <= nonzero[-1]] + [int(nonzero[-1]) + 1]
        bins = [int(counts[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        out["length"] = {
            "min": int(nonzero[0]),
            "median": (lower + upper) / 2,
            "mean": round(float((values * counts).sum()) / records, 3),
            "max": int(nonzero[-1]),
            "histogram": {"edges": edges, "counts": bins},
        }
        present = np.flatnonzero(self.residue_counts)
        out["composition"] = {
            chr(b): {
                "count": int(self.residue_counts[b]),
                "fraction": round(float(self.residue_counts[b]) / residues, 6),
            }
            for b in present
        }
        return out


def summary_table(summary: Mapping, stream=None) -> None:
    """Print the end-of-run table (counts, reasons, splits, throughput) to stderr."""
    from rich.console import Console
    from rich.table import Table

    counts = summary["counts"]
    table = Table(title="wensu-preprocess summary", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records read", f"{counts['read']:,}")
    table.add_row("written", f"{counts['written']:,}")
    if counts.get("written_pieces", counts["written"]) != counts["written"]:
        table.add_row("  as pieces", f"{counts['written_pieces']:,}")
    table.add_row("duplicates", f"{counts['duplicates']:,}")
    table.add_row("filtered", f"{counts['filtered']:,}")
    for reason, n in sorted(counts["filtered_by_reason"].items()):
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("quarantined", f"{counts['quarantined']:,}")
    for reason, n in sorted(counts["quarantined_by_reason"].items()):
        table.add_row(f"  {reason}", f"{n:,}")
    for split, info in summary["splits"].items():
        table.add_row(
            f"split {split}",
            f"{info['records']:,} ({len(info['shards'])} shards)",
            end_section=False,
        )
    identity = summary.get("max_test_train_identity")
    if identity is not None:
        table.add_row("max test-train identity", f"{identity:.3f}")
    if summary.get("seconds"):
        table.add_row("time", f"{summary['seconds']:.1f} s")
        table.add_row("throughput (whole run)", f"{summary['mb_per_s']:.1f} MB/s FASTA text")
        table.add_row("", f"{summary['records_per_s']:,.0f} records/s")
    console = Console(file=stream or sys.stderr)
    console.print(table)
    console.print(f"dataset: {summary['output']}", soft_wrap=True)
