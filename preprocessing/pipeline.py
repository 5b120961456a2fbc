"""``run_preprocess``: FASTA in, validated + deduplicated + split HDF5 shards out.

Stages (each restartable after kill -9, see ``workdir.py``):

1. parse + validate input units into parts (process pool; parts are kept across crashes);
2. merge the parts in input order: duplicate ids, exact duplicates, filters, TSV reports;
3. optionally cluster the kept sequences with MMseqs2 (result kept across crashes);
4. route kept records to train/valid/test by hash and cut shards (journaled, reused on rerun);
5. stats.json and manifest.json, after checking read = written + duplicates + filtered +
   quarantined. Without clustering, 2 and 4 run in one pass as parts arrive.

The output depends only on the inputs and the output settings: never on ``num_workers``, on
the number of interruptions, or on the machine. Only the manifest's ``created`` differs.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from wensu.data.fasta import residue_bytes
from wensu.data.shards import FORMAT_VERSION, MANIFEST_NAME, SPLITS, sha256_file, write_manifest
from wensu.resources import default_fasta

from .cluster_stage import ClusterStage
from .config import PreprocessConfig, load_config
from .dedup import KEEP, Merger, open_report, publish_report
from .errors import AccountingError, InputError
from .inputs import InputFile, Unit, plan_units, resolve_inputs
from .parse import (
    DIGEST_SIZE,
    ParseSettings,
    Part,
    UnitError,
    iter_unit_parts,
    load_part,
    no_cyclic_gc,
    parse_unit,
    part_path,
)
from .routing import Router
from .sharding import ShardCommitter, ShardJournal, SplitWriter
from .split import SplitAssigner
from .stats import SequenceStats, summary_table
from .workdir import PauseHook, complete_manifest, finish, prepare, write_json_atomic

log = logging.getLogger("wensu.preprocessing")

SOURCE = "wensu-preprocess"


def _parse_task(args: tuple) -> dict:
    path, unit, work, settings = args
    return parse_unit(path, unit, work, settings)


def _version() -> str:
    from wensu import __version__

    return __version__


class _Run:
    def __init__(self, config: PreprocessConfig):
        self.config = config
        self.output = Path(config.output).expanduser().resolve()
        self.pause = PauseHook()
        self.clustering = bool(config.cluster["enabled"])

    # -- inputs -----------------------------------------------------------------------------
    def resolve(self) -> tuple[list[InputFile], list[dict]]:
        specs = self.config.inputs or [str(default_fasta())]
        download = self.config.download
        files = resolve_inputs(
            specs,
            cache_dir=Path(download["cache_dir"]).expanduser(),
            checksums=download["sha256"],
            retries=int(download["retries"]),
            timeout=float(download["timeout"]),
        )
        return files, [f.describe(sha256_file(f.path)) for f in files]

    # -- stage 1: parse ---------------------------------------------------------------------
    def parsed_parts(self, files: list[InputFile], units: list[Unit]) -> Iterator[Part]:
        """Parts of every unit in input order, parsing in a pool as needed."""
        cfg = self.config
        settings = ParseSettings(
            valid=residue_bytes(cfg.allow_gaps),
            chunk_bytes=cfg.chunk_bytes,
            on_truncated=cfg.on_truncated,
            require_active=cfg.require_active,
            assign=None if self.clustering else self.assign,
        )
        tasks = [(files[u.file_index].path, u, self.work, settings) for u in units]
        workers = min(cfg.num_workers, len(tasks))
        if workers <= 1:
            # In process: parts come straight from the parser, not read back from disk.
            for path, unit, work, settings in tasks:
                try:
                    yield from self._consume(iter_unit_parts(path, unit, work, settings))
                except UnitError as err:
                    raise InputError(str(err) + self._truncation_hint(str(err))) from None
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for result in pool.imap(_parse_task, tasks, chunksize=1):
                if "error" in result:
                    message = result["error"]
                    raise InputError(message + self._truncation_hint(message))
                yield from self._consume((meta, None) for meta in result["parts"])

    def _consume(self, parts: Iterator[tuple[dict, Part | None]]) -> Iterator[Part]:
        for meta, part in parts:
            if part is None:
                part = load_part(part_path(self.work, meta["unit"], meta["part"]))
            if "truncated" in meta:
                self.truncated[meta["file_index"]] = meta["truncated"]
            self.bytes_read += meta["bytes"]
            self.progress.update(meta["bytes"])
            self.progress.set_postfix(records=f"{self.merger.read + meta['records']:,}")
            self.pause("part")
            yield part

    @staticmethod
    def _truncation_hint(message: str) -> str:
        if "incomplete or damaged" not in message:
            return ""
        return (
            "; nothing was published. Re-download the file, or rerun with on_truncated=keep to "
            "keep the complete records before the damage"
        )

    # -- stage 4: routing -------------------------------------------------------------------
    def _writers(self, journal: ShardJournal) -> dict[str, SplitWriter]:
        return {
            split: SplitWriter(
                self.output,
                split,
                self.config.shard_size_records,
                journal,
                committer=self.committer,
                with_clusters=self.clustering,
                source=SOURCE,
                on_write=lambda _entry: self.pause("shard"),
            )
            for split in SPLITS
        }

    def route(self, part: Part, codes: np.ndarray, first_kept: int) -> int:
        """Send ``part``'s kept records to their splits; returns the number of kept records."""
        kept = np.flatnonzero(codes == KEEP)
        clusters = None
        if self.stage is not None:
            keys, clusters = self.stage.keys_and_clusters(first_kept, int(kept.size))
            split_of = self.assign.indices(keys)
        elif part.splits is not None:
            split_of = part.splits[kept]
        else:  # a part kept from a run of an older version
            digests = part.digests
            keys = [digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] for i in kept.tolist()]
            split_of = self.assign.indices(keys)
        self.router.route(part, kept, split_of, clusters, first_kept)
        return int(kept.size)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.config
        started = time.perf_counter()
        files, inputs = self.resolve()
        fingerprint = cfg.fingerprint(inputs)
        self.output.mkdir(parents=True, exist_ok=True)
        done = complete_manifest(self.output, fingerprint)
        if done is not None:
            log.info("%s: already complete (same inputs and settings); nothing to do", self.output)
            finish(self.output, cfg.keep_work)
            return self.summary(done, time.perf_counter() - started, self._saved_stats())
        self.work = prepare(self.output, fingerprint, overwrite=cfg.overwrite)
        units = plan_units(files, cfg.chunk_bytes)
        self.assign = SplitAssigner(cfg.split_fractions, cfg.split["seed"])
        self.truncated: dict[int, dict] = {}
        self.bytes_read = 0
        self.stage = None
        if self.clustering:
            self.stage = ClusterStage(self.work, cfg.cluster, threads=cfg.num_workers)
        journal = ShardJournal(self.work / "shards.jsonl")
        self.committer = ShardCommitter()
        self.pause.settle = self.committer.wait
        self.writers = self._writers(journal)
        self.router = Router(
            self.writers,
            max_length=cfg.max_length,
            long_policy=cfg.long_policy,
            identity=None if self.stage is None else self.stage.identity_fasta,
        )
        quarantine_path = self.output / "quarantine.tsv"
        duplicates_path = self.output / "duplicates.tsv"
        quarantine, duplicates = open_report(quarantine_path), open_report(duplicates_path)
        self.merger = Merger(
            [str(f.path) for f in files],
            quarantine,
            duplicates,
            min_length=cfg.min_length,
            max_length=cfg.max_length,
            drop_long=cfg.long_policy == "drop",
        )
        from tqdm import tqdm

        self.progress = tqdm(
            desc="wensu-preprocess",
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=not cfg.progress,
            mininterval=0.5,
        )
        merged: list[tuple[int, int, np.ndarray]] = []
        kept = 0
        with self.progress, self.committer:
            for part in self.parsed_parts(files, units):
                codes = self.merger.merge(part)
                if self.stage is not None:
                    self.stage.collect(part, codes)
                    merged.append((part.meta["unit"], part.meta["part"], codes))
                else:
                    kept += self.route(part, codes, kept)
            publish_report(quarantine, quarantine_path)
            publish_report(duplicates, duplicates_path)
            if self.stage is not None:
                self.stage.cluster()
                for unit, index, codes in merged:
                    part = load_part(part_path(self.work, unit, index))
                    kept += self.route(part, codes, kept)
            for writer in self.writers.values():
                writer.flush()
        identity = None if self.stage is None else self.stage.identity_report()
        counts = self.check_accounting(kept)
        stats = self.build_stats(counts, identity)
        write_json_atomic(self.output / "stats.json", stats)
        manifest = self.manifest(fingerprint, inputs, counts)
        write_manifest(self.output, manifest)
        finish(self.output, cfg.keep_work)
        elapsed = time.perf_counter() - started
        summary = self.summary(manifest, elapsed, stats)
        summary["reused_shards"] = sum(w.reused for w in self.writers.values())
        return summary

    def _saved_stats(self) -> dict | None:
        try:
            return json.loads((self.output / "stats.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def check_accounting(self, kept: int) -> dict:
        merger = self.merger
        counts = {
            "read": merger.read,
            "written": kept,
            "written_pieces": self.router.pieces,
            "duplicates": merger.duplicate_count,
            "filtered": sum(merger.filtered.values()),
            "quarantined": sum(merger.quarantined.values()),
            "filtered_by_reason": dict(sorted(merger.filtered.items())),
            "quarantined_by_reason": dict(sorted(merger.quarantined.items())),
        }
        accounted = (
            counts["written"] + counts["duplicates"] + counts["filtered"] + counts["quarantined"]
        )
        if counts["read"] != accounted:
            raise AccountingError(
                f"accounting violated: read {counts['read']:,} != written {counts['written']:,} "
                f"+ duplicates {counts['duplicates']:,} + filtered {counts['filtered']:,} "
                f"+ quarantined {counts['quarantined']:,}"
            )
        in_shards = sum(w.summary()["records"] for w in self.writers.values())
        if in_shards != self.router.pieces:
            raise AccountingError(
                f"accounting violated: {self.router.pieces:,} pieces routed but "
                f"{in_shards:,} in shards"
            )
        return counts

    def build_stats(self, counts: dict, identity: dict | None) -> dict:
        total = SequenceStats()
        splits = {}
        for split, writer in self.writers.items():
            splits[split] = writer.stats.to_dict()
            total = total.merge(writer.stats)
        clustering = None if self.stage is None else self.stage.summary(identity)
        return {
            "counts": counts,
            "written": total.to_dict(),
            "splits": splits,
            "clustering": clustering,
            "max_test_train_identity": identity["max_identity"] if identity else None,
        }

    def manifest(self, fingerprint: str, inputs: list[dict], counts: dict) -> dict:
        entries = []
        for index, entry in enumerate(inputs):
            entry = dict(entry, records=self.merger.records_by_file[index])
            if index in self.truncated:
                entry["truncated"] = self.truncated[index]
            entries.append(entry)
        return {
            "format_version": FORMAT_VERSION,
            "kind": "proteins",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "generator": {"name": SOURCE, "version": _version()},
            "fingerprint": fingerprint,
            "inputs": entries,
            "config": self.config.output_config(),
            "splits": {split: writer.summary() for split, writer in self.writers.items()},
            "counts": counts,
            "stats": "stats.json",
            "quarantine": "quarantine.tsv",
            "duplicates": "duplicates.tsv",
        }

    def summary(self, manifest: dict, seconds: float, stats: dict | None) -> dict:
        bytes_read = getattr(self, "bytes_read", 0)
        return {
            "output": str(self.output),
            "manifest": str(self.output / MANIFEST_NAME),
            "counts": manifest["counts"],
            "splits": manifest["splits"],
            "max_test_train_identity": (stats or {}).get("max_test_train_identity"),
            "seconds": seconds,
            "bytes_read": bytes_read,
            "mb_per_s": bytes_read / 1e6 / seconds if seconds > 0 else 0.0,
            "records_per_s": manifest["counts"]["read"] / seconds if seconds > 0 else 0.0,
        }


def run_preprocess(
    cfg: Mapping | DictConfig | PreprocessConfig | None = None,
    *,
    show_summary: bool = False,
    **kwargs,
) -> dict:
    """Run the pipeline; ``cfg`` and ``kwargs`` override ``conf/preprocess.yaml``.

    Example: ``run_preprocess(input=["a.fasta.gz"], output="out", num_workers=2)``.
    Returns a summary: output path, counts, splits (with shards), throughput.
    Raises a ``ValueError`` subclass (``PreprocessError`` family) for bad inputs or settings.
    """
    config = load_config(cfg, **kwargs)
    with no_cyclic_gc():
        summary = _Run(config).run()
    if show_summary:
        summary_table(summary)
    return summary
