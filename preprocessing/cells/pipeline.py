"""``run_cells(config)``: .h5ad files of raw counts -> a resumable, checksummed cell dataset.

Order of work: hash and open every input (all files validated before anything is written),
find duplicated cells across inputs, scan each input (cell fates, gene usage; cached), fix the
vocabulary, then write each input's cells into shards (journaled), and finally the reports and
the manifest. Accounting per input and in total: read = written + duplicates + filtered +
quarantined, or the run fails with :class:`~wensu.preprocessing.errors.AccountingError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from wensu.data.shards import SPLITS, read_manifest, sha256_file, write_manifest

from ..errors import ConfigError, EmptyDatasetError, InputError
from .config import CellsConfig, load_cells_config
from .duplicates import find_duplicates
from .h5ad import H5adCells, dataset_name
from .reports import (
    build_manifest,
    write_duplicates,
    write_genes_dropped,
    write_panels,
    write_quarantine,
    write_stats,
)
from .scan import build_vocab, pooled_gene_cells, pooled_medians, scan_file
from .vocab import GeneVocab, VocabError
from .workdir import (
    JOURNAL_NAME,
    PauseHook,
    complete_manifest,
    finish,
    prepare,
    read_json,
    write_json,
)
from .writer import ShardEmitter, SplitRouter, write_file

log = logging.getLogger(__name__)


def expand_inputs(items: list[str]) -> list[Path]:
    """Input files in a fixed order: files as given, directories' ``*.h5ad`` sorted by name."""
    if not items:
        raise InputError("no input given: set input=[file.h5ad,...] or a directory of .h5ad files")
    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.h5ad"))
            if not found:
                raise InputError(f"{path}: directory holds no .h5ad files")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise InputError(f"{path}: input not found")
    names = [dataset_name(p) for p in paths]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"inputs share dataset names (file names): {', '.join(repeated)}")
    return paths


def _describe(path: Path) -> dict:
    return {
        "path": str(path.resolve()),
        "dataset": dataset_name(path),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _summary(output: Path, manifest: dict, *, already_complete: bool) -> dict[str, Any]:
    stats = read_json(output / manifest["stats"], {})
    return {
        "output": str(output),
        "manifest": str(output / "manifest.json"),
        "already_complete": already_complete,
        "counts": manifest["counts"],
        "splits": {s: manifest["splits"][s]["records"] for s in SPLITS},
        "tokens": {s: manifest["splits"][s]["tokens"] for s in SPLITS},
        "vocab_size": manifest["vocab_size"],
        "warnings": stats.get("warnings", []),
    }


def _refuse_empty(results: list[dict], paths: list[Path], output: Path) -> None:
    """Zero cells written is an error naming the inputs and the report, not a dataset."""
    if sum(int(r["stats"]["written"]) for r in results):
        return
    read = sum(int(r["stats"]["read"]) for r in results)
    reasons: dict[str, int] = {}
    for result in results:
        for key in ("filtered_by_reason", "quarantined_by_reason"):
            for reason, count in result["stats"].get(key, {}).items():
                reasons[reason] = reasons.get(reason, 0) + int(count)
        reasons["duplicates"] = reasons.get("duplicates", 0) + int(result["stats"]["duplicates"])
    why = ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items()) if n) or "no cells"
    names = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    raise EmptyDatasetError(
        f"no cell written: all {read:,} cells of {names} were removed ({why}); see "
        f"{output / 'quarantine.tsv'}; no dataset was published"
    )


def run_cells(config: CellsConfig | Mapping | None = None, **overrides) -> dict[str, Any]:
    """Run the cells pipeline; returns a summary (counts, cells per split, vocab size,
    warnings). Settings as in ``conf/preprocess_cells.yaml``; ``overrides`` update them."""
    cfg = load_cells_config(config, **overrides)
    paths = expand_inputs(cfg.inputs)
    inputs = [_describe(p) for p in paths]
    given_vocab = None
    fingerprint_inputs = list(inputs)
    if cfg.vocab:
        try:
            given_vocab = GeneVocab.load(cfg.vocab)
        except VocabError as err:
            raise ConfigError(f"vocab: {err}") from None
        fingerprint_inputs.append({"vocab_sha256": given_vocab.fingerprint()})
    fingerprint = cfg.fingerprint(fingerprint_inputs)
    output = Path(cfg.output)
    done = complete_manifest(output, fingerprint)
    if done is not None:
        return _summary(output, done, already_complete=True)
    work = prepare(output, fingerprint, overwrite=cfg.overwrite)
    binning = cfg.binning_config
    rank = binning.token_order == "rank"

    with ExitStack() as stack:
        files = [stack.enter_context(H5adCells(p, cfg.read_options)) for p in paths]
        dup = cfg.duplicates
        dropped, duplicates = find_duplicates(
            files,
            flag_columns=dict(dup["flag_columns"]),
            label_pairs=list(dup["label_pairs"]),
            match_counts=bool(dup["match_counts"]),
        )
        scans = [
            scan_file(
                cells,
                dropped[cells.dataset],
                min_genes=cfg.filters["min_genes"],
                chunk_cells=cfg.chunk_cells,
                target_sum=binning.target_sum,
                need_histogram=rank,
                cache=work / "scan" / f"{i:05d}.npz",
            )
            for i, cells in enumerate(files)
        ]
        pooled = None if given_vocab else pooled_gene_cells(files, scans)
        vocab = given_vocab or build_vocab(files, scans, cfg.filters["min_cells"])
        if not vocab.genes:
            write_quarantine(output, files, scans)
            kept = sum(int((scan.codes == 0).sum()) for scan in scans)
            raise EmptyDatasetError(
                f"no gene is expressed in >= {cfg.filters['min_cells']} kept cells "
                f"({kept:,} of {sum(c.n_cells for c in files):,} cells kept; see "
                f"{output / 'quarantine.tsv'}); no dataset was published"
            )
        vocab.save(output / "vocab.json")
        medians = pooled_medians(files, scans, vocab) if rank else None

        journal = read_json(work / JOURNAL_NAME)
        if not isinstance(journal, dict) or set(journal) != {"files", "partial"}:
            journal = {"files": {}, "partial": {}}

        def save_journal() -> None:
            write_json(work / JOURNAL_NAME, journal)

        emitter = ShardEmitter(output, journal, save_journal, PauseHook())
        router = SplitRouter(
            {s: cfg.split[s] for s in SPLITS},
            cfg.split["seed"],
            holdout_datasets=cfg.holdout["datasets"],
            holdout_donors=cfg.holdout["donors"],
            holdout_split=cfg.holdout["split"],
        )
        results = []
        for index, (cells, scan) in enumerate(zip(files, scans, strict=True)):
            key = f"{index:05d}"
            if key in journal["files"]:
                result = journal["files"][key]
                for split in SPLITS:
                    emitter.next_index[split] += len(result["shards"][split])
            else:
                result = write_file(
                    cells,
                    scan,
                    vocab=vocab,
                    binning=binning,
                    router=router,
                    emitter=emitter,
                    shard_size=cfg.shard_size_cells,
                    chunk_cells=cfg.chunk_cells,
                    medians=medians,
                )
                journal["files"][key] = result
                journal["partial"] = {}
                save_journal()
            if cfg.progress:
                stats = result["stats"]
                log.info(
                    "%s: %d of %d cells written (%d duplicates, %d filtered, %d quarantined)",
                    cells.dataset,
                    stats["written"],
                    stats["read"],
                    stats["duplicates"],
                    stats["filtered"],
                    stats["quarantined"],
                )
            results.append(result)

        write_quarantine(output, files, scans)
        write_duplicates(output, duplicates)
        _refuse_empty(results, paths, output)
        write_genes_dropped(output, files, scans, vocab, pooled)
        write_panels(output, files, vocab)
        write_stats(output, files, results, vocab, built_vocab=given_vocab is None, medians=medians)
        manifest = build_manifest(
            output,
            fingerprint=fingerprint,
            inputs=inputs,
            config=cfg.output_config(),
            vocab=vocab,
            label_columns=list(cfg.label_columns),
            results=results,
        )
        write_manifest(output, manifest)
        for cells in files:
            for message in cells.warnings:
                log.warning(message)
    finish(output, cfg.keep_work)
    return _summary(output, read_manifest(output), already_complete=False)
