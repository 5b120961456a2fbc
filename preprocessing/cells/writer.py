"""Pass 2: each input's kept cells -> tokens -> split -> shards, journaled shard by shard.

Shards never span input files, so an input is the unit of resume: a finished input is skipped
on a rerun (its shards and statistics come from the journal), and inside the input being
written, shards already journaled (and still hashing the same) are not written again. Cells
keep the file's order within a split; shard numbers run on over the inputs in input order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wensu.data.cell_split import SplitRouter as SplitRouter  # re-exported
from wensu.data.cells import write_cell_shard
from wensu.data.shards import SPLITS, sha256_file, shard_name

from .binning import BinningConfig, tokenize_cells
from .h5ad import H5adCells
from .scan import CODE, FILTER_REASONS, QUARANTINE_REASONS, REASONS, FileScan
from .vocab import GeneVocab


@dataclass
class ShardEmitter:
    """Writes shards (or reuses journaled ones) and keeps the journal and shard counters."""

    output: Path
    journal: dict
    save_journal: Callable[[], None]
    pause: Callable[[], None]
    next_index: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def emit(self, split: str, cells: H5adCells, rows: list[int], genes: list, bins: list) -> dict:
        relative = f"{split}/{shard_name(self.next_index[split])}"
        path = self.output / relative
        entry = self.journal["partial"].get(relative)
        if entry is None or not path.is_file() or sha256_file(path) != entry["sha256"]:
            index = np.asarray(rows, dtype=np.int64)
            entry = write_cell_shard(
                path,
                ids=cells.cell_ids[index],
                datasets=[cells.dataset] * len(rows),
                genes=genes,
                bins=bins,
                labels={c: v[index] for c, v in cells.labels.items()},
                donors=cells.donors[index],
                attrs={"source": cells.dataset},
            )
            self.journal["partial"][relative] = entry
            self.save_journal()
            self.pause()
        self.next_index[split] += 1
        return entry


def write_file(
    cells: H5adCells,
    scan: FileScan,
    *,
    vocab: GeneVocab,
    binning: BinningConfig,
    router: SplitRouter,
    emitter: ShardEmitter,
    shard_size: int,
    chunk_cells: int,
    medians: np.ndarray | None,
) -> dict:
    """Write one input's cells; returns ``{"shards": {split: [entries]}, "stats": {...}}``."""
    token_ids = vocab.lookup(list(cells.symbols))
    outside = token_ids < 0
    file_medians = None
    if medians is not None:
        file_medians = np.where(outside, 1.0, medians[np.maximum(token_ids - vocab.num_special, 0)])
    panel = np.sort(token_ids[~outside]) if binning.include_zeros else None
    splits = router(cells.dataset, cells.cell_ids, cells.donors)
    codes = scan.codes.copy()
    shards: dict[str, list[dict]] = {s: [] for s in SPLITS}
    buffers: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in SPLITS}
    split_stats = {s: _empty_split_stats(binning.num_bins, cells.labels) for s in SPLITS}
    umi_total = umi_outside = 0.0
    truncated = 0

    def flush(split: str) -> None:
        rows, genes, bins = buffers[split]
        if rows:
            shards[split].append(emitter.emit(split, cells, rows, genes, bins))
            buffers[split] = ([], [], [])

    for start in range(0, cells.n_cells, chunk_cells):
        stop = min(start + chunk_cells, cells.n_cells)
        kept = np.flatnonzero(codes[start:stop] == CODE["ok"])
        if kept.size == 0:
            continue
        counts = cells.read_rows(start, stop)[kept]
        umi_total += float(counts.sum())
        umi_outside += float(counts[:, outside].sum())
        genes, bins, cut = tokenize_cells(
            counts, token_ids, binning, medians=file_medians, panel=panel
        )
        truncated += cut
        for k, row in enumerate(kept + start):
            if genes[k].size == 0:
                codes[row] = CODE["no_vocab_genes"]
                continue
            split = splits[row]
            buffer = buffers[split]
            buffer[0].append(int(row))
            buffer[1].append(genes[k])
            buffer[2].append(bins[k])
            _add_cell(split_stats[split], genes[k], bins[k], cells, int(row))
            if len(buffer[0]) >= shard_size:
                flush(split)
    for split in SPLITS:
        flush(split)
        split_stats[split]["bins"] = [int(n) for n in split_stats[split]["bins"]]
    stats = _file_stats(cells, codes, truncated, token_ids, umi_total, umi_outside)
    stats["splits"] = split_stats
    return {"shards": shards, "stats": stats}


def _empty_split_stats(num_bins: int, labels: Mapping[str, np.ndarray]) -> dict:
    return {
        "cells": 0,
        "tokens": 0,
        "max_tokens": 0,
        "bins": np.zeros(num_bins + 1, dtype=np.int64),
        "labels": {c: {} for c in labels},
    }


def _add_cell(stats: dict, genes: np.ndarray, bins: np.ndarray, cells: H5adCells, row: int) -> None:
    stats["cells"] += 1
    stats["tokens"] += int(genes.size)
    stats["max_tokens"] = max(stats["max_tokens"], int(genes.size))
    stats["bins"] += np.bincount(bins, minlength=stats["bins"].size)
    for column, values in cells.labels.items():
        label = str(values[row])
        stats["labels"][column][label] = stats["labels"][column].get(label, 0) + 1


def _file_stats(
    cells: H5adCells,
    codes: np.ndarray,
    truncated: int,
    token_ids: np.ndarray,
    umi_total: float,
    umi_outside: float,
) -> dict:
    by_reason = Counter(REASONS[c] for c in codes.tolist())
    return {
        "read": cells.n_cells,
        "written": by_reason["ok"],
        "duplicates": by_reason["duplicate"],
        "filtered": sum(by_reason[r] for r in FILTER_REASONS),
        "quarantined": sum(by_reason[r] for r in QUARANTINE_REASONS),
        "filtered_by_reason": {r: by_reason[r] for r in FILTER_REASONS if by_reason[r]},
        "quarantined_by_reason": {r: by_reason[r] for r in QUARANTINE_REASONS if by_reason[r]},
        "truncated_cells": truncated,
        "genes": {
            "measured": int(cells.symbols.size),
            "in_vocab": int((token_ids >= 0).sum()),
            "outside_vocab": int((token_ids < 0).sum()),
            "outside_vocab_umi_fraction": umi_outside / umi_total if umi_total else 0.0,
            "duplicated_symbols": cells.duplicated_genes,
            "dropped_while_reading": len(cells.dropped_genes),
        },
    }
