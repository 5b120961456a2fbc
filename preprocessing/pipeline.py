"""``run_preprocess``: FASTA in, validated + deduplicated + split HDF5 shards out.

Stages (each restartable after kill -9, see ``workdir.py``); the tasks of stages 1, 2 and 4 run
in the executor (this process, a local pool, or Ray: ``executor.py``):

1. parse + validate input units into parts on disk (``parse.py``, ``parts.py``), one task per
   unit; every record's split is assigned from its digest here;
2. decide duplicates out of core (``decide.py``): hash partitions sized by ``memory_limit``,
   first ids, then sequences;
3. in the driver, parts in input order: decision codes, filters, ``quarantine.tsv`` and
   ``duplicates.tsv`` (``dedup.py``), and the shard plan (``shard_tasks.py``); with clustering,
   MMseqs2 and routing by cluster representative instead (``cluster_stage.py``, ``routing.py``);
4. shards written by independent tasks (journaled, reused on rerun);
5. stats.json and manifest.json, after checking read = written + duplicates + filtered +
   quarantined.

The output depends only on the inputs and the output settings: never on ``num_workers``,
``memory_limit``, the executor, the number of interruptions, or the machine. Only the
manifest's ``created`` differs.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from wensu import __version__
from wensu.data.fasta import residue_bytes
from wensu.data.shards import FORMAT_VERSION, MANIFEST_NAME, SPLITS, sha256_file, write_manifest
from wensu.resources import default_fasta

from .cluster_stage import ClusterStage
from .config import PreprocessConfig, load_config
from .decide import (
    DuplicatePairs,
    PartitionTask,
    PartRef,
    apply_partition,
    partition_done,
    plan_partitions,
    run_partition,
)
from .dedup import KEEP, Merger, open_report, publish_report
from .errors import (
    AccountingError,
    EmptyDatasetError,
    InputError,
    OutputError,
    empty_message,
    write_failure,
)
from .executor import make_executor
from .inputs import InputFile, Unit, plan_units, resolve_inputs
from .memory import bucket_error, partition_keys
from .parse import ParseSettings, load_part, no_cyclic_gc, parse_unit
from .parts import BUCKETS, PartReader, ReaderCache, part_dir, remove_partials
from .remote import fetch_inputs, is_remote, remove_staging, staging_dir, upload_output
from .routing import Router
from .shard_tasks import (
    ShardLog,
    ShardPlanner,
    ShardTask,
    read_codes,
    stats_from_json,
    write_shard_task,
)
from .sharding import ShardCommitter, ShardJournal, SplitWriter
from .split import SplitAssigner
from .stats import SequenceStats, summary_table
from .workdir import PauseHook, complete_manifest, finish, prepare, write_json_atomic

log = logging.getLogger("wensu.preprocessing")

SOURCE = "wensu-preprocess"


def _parse_task(args: tuple) -> dict:
    path, unit, work, settings = args
    return parse_unit(path, unit, work, settings)


class _Run:
    def __init__(self, config: PreprocessConfig):
        self.config = config
        self.cache_dir = Path(config.download["cache_dir"]).expanduser()
        self.remote_output = config.output if is_remote(config.output) else None
        if self.remote_output:
            self.output = staging_dir(self.remote_output, self.cache_dir)
        else:
            self.output = Path(config.output).expanduser().resolve()
        self.pause = PauseHook()
        self.clustering = bool(config.cluster["enabled"])

    # -- inputs -----------------------------------------------------------------------------
    def resolve(self) -> tuple[list[InputFile], list[dict]]:
        specs, urls = [], {}
        for spec in self.config.inputs or [str(default_fasta())]:
            if not is_remote(spec):
                specs.append(spec)
                continue
            for local, url in fetch_inputs(spec, self.cache_dir):
                urls[str(Path(local).resolve())] = url
                specs.append(local)
        download = self.config.download
        files = resolve_inputs(
            specs,
            cache_dir=self.cache_dir,
            checksums=download["sha256"],
            retries=int(download["retries"]),
            timeout=float(download["timeout"]),
        )
        inputs = [f.describe(sha256_file(f.path)) for f in files]
        for entry in inputs:
            if entry["path"] in urls:
                entry["url"] = urls[entry["path"]]
        return files, inputs

    # -- stage 1: parse ---------------------------------------------------------------------
    def parse(self, files: list[InputFile], units: list[Unit]) -> list[PartRef]:
        """Parse every unit into parts (in the executor); the parts in input order."""
        cfg = self.config
        settings = ParseSettings(
            valid=residue_bytes(cfg.allow_gaps),
            chunk_bytes=cfg.chunk_bytes,
            on_truncated=cfg.on_truncated,
            require_active=cfg.require_active,
            assign=None if self.clustering else self.assign,
        )
        tasks = [(files[u.file_index].path, u, self.work, settings) for u in units]
        refs: list[PartRef] = []
        base = 0
        for result in self.executor.map(_parse_task, tasks):
            if "error" in result:
                message = result["error"]
                if result.get("output"):
                    raise OutputError(message)
                raise InputError(message + self._truncation_hint(message))
            for meta in result["parts"]:
                if "truncated" in meta:
                    self.truncated[meta["file_index"]] = meta["truncated"]
                self.bytes_read += meta["bytes"]
                self.progress.update(meta["bytes"])
                self.records_parsed += meta["records"]
                self.progress.set_postfix(records=f"{self.records_parsed:,}")
                directory = part_dir(self.work, meta["unit"], meta["part"])
                refs.append(PartRef(str(directory), base, meta["valid"]))
                base += meta["valid"]
                self.pause("part")
        return refs

    @staticmethod
    def _truncation_hint(message: str) -> str:
        if "incomplete or damaged" not in message:
            return ""
        return (
            "; nothing was published. Re-download the file, or rerun with on_truncated=keep to "
            "keep the complete records before the damage"
        )

    # -- stage 2: out-of-core duplicate decisions -------------------------------------------
    def decide(self, refs: list[PartRef]) -> tuple[Path, int]:
        """Run both partition passes; the flag file and the number of digest partitions."""
        directory = self.work / "decide"
        directory.mkdir(exist_ok=True)
        total = sum(ref.valid for ref in refs)
        budget = partition_keys(self.config.memory_limit)
        plans = {}
        for kind, what in (("i", "ids"), ("d", "sequences")):
            counts = np.zeros(BUCKETS, dtype=np.int64)
            for ref in refs:
                if ref.valid:
                    counts += np.diff(PartReader(ref.directory).column(f"{kind}buckets"))
            try:
                plans[kind] = plan_partitions(counts, budget, what)
            except MemoryError as err:
                raise bucket_error(err, int(counts.max())) from None
        flags = directory / "flags.u8"
        plan = {"records": total, "parts": len(refs), "i": plans["i"], "d": plans["d"]}
        plan_path = directory / "plan.json"
        old = json.loads(plan_path.read_text()) if plan_path.exists() else None
        if old != json.loads(json.dumps(plan)) or not flags.exists():
            for stale in directory.iterdir():
                stale.unlink()
            with open(flags, "wb") as handle:
                handle.truncate(total)
            write_json_atomic(plan_path, plan)
        log.info("deduplicating %d records in %d id and %d sequence partitions", total,
                 len(plans["i"]), len(plans["d"]))  # fmt: skip
        if total:
            for kind in ("i", "d"):
                tasks = [
                    PartitionTask(kind, index, first, end, tuple(refs), str(flags), str(directory))
                    for index, (first, end) in enumerate(plans[kind])
                    if not partition_done(directory, kind, index).exists()
                ]
                results = self.executor.map(run_partition, tasks)
                for task, result in zip(tasks, results, strict=True):
                    apply_partition(task, result)
                    self.pause("partition")
        return flags, len(plans["d"]) if total else 0

    # -- stage 3: reports, codes and the shard plan -----------------------------------------
    def report(self, refs: list[PartRef], flags_path: Path, partitions: int) -> list:
        """Codes of every part in input order (saved beside it), the TSV reports, and the
        shard tasks (or, with clustering, the kept records collected for MMseqs2)."""
        pairs = DuplicatePairs(flags_path.parent, partitions) if refs else None
        bases = np.array([ref.base for ref in refs], dtype=np.int64)
        codes_path = flags_path.with_name("codes.i1")
        codes_file = open(codes_path, "wb")
        planner = ShardPlanner(self.output, codes_path, self.config.shard_size_records,
                               self.config.max_length, self.config.long_policy, SOURCE)  # fmt: skip
        tasks = []
        readers = ReaderCache()
        for ref in refs:
            part = readers.get(ref.directory)
            end = ref.base + ref.valid
            with open(flags_path, "rb") as handle:
                handle.seek(ref.base)
                flags = np.frombuffer(handle.read(ref.valid), dtype=np.uint8)
            found = pairs.between(ref.base, end)
            kept_ids = _ids_of(readers, refs, bases, found[:, 1])
            found = found - np.array([ref.base, 0], dtype=np.int64)
            codes = self.merger.merge(part, flags, found, kept_ids)
            codes_file.write(codes.tobytes())
            if self.stage is not None:
                self.stage.collect(load_part(part.directory), codes)
            else:
                tasks.extend(planner.add(part, ref.base, codes))
        codes_file.close()
        tasks.extend(planner.flush())
        self.pieces = planner.pieces
        return tasks

    # -- stage 4: shards --------------------------------------------------------------------
    def write_shards(self, tasks: list[ShardTask]) -> None:
        journal = ShardLog(self.work / "shards.jsonl")
        items: dict[tuple[str, int], dict] = {}
        todo = []
        for task in tasks:
            item = journal.reusable(task)
            if item is None:
                todo.append(task)
            else:
                items[task.split, task.index] = item
                self.reused += 1
        window = 1 if self.pause.armed("shard") else 0
        for task, item in zip(todo, self.executor.map(write_shard_task, todo, window=window),
                              strict=True):  # fmt: skip
            if "error" in item:
                raise OutputError(item["error"])
            journal.append(item)
            items[task.split, task.index] = item
            self.pause("shard")
        for task in tasks:
            item = items[task.split, task.index]
            self.split_entries[task.split].append(item["entry"])
            self.split_stats[task.split] = self.split_stats[task.split].merge(
                stats_from_json(item["stats"])
            )

    # -- clustering: routing by cluster representative, in the driver ------------------------
    def route_clusters(self, refs: list[PartRef]) -> None:
        self.stage.cluster()
        journal = ShardJournal(self.work / "clustered-shards.jsonl")
        committer = ShardCommitter()
        writers = {
            split: SplitWriter(self.output, split, self.config.shard_size_records, journal,
                               committer=committer, with_clusters=True, source=SOURCE,
                               on_write=lambda _entry: self.pause("shard"))
            for split in SPLITS
        }  # fmt: skip
        self.pause.settle = committer.wait
        router = Router(writers, max_length=self.config.max_length,
                        long_policy=self.config.long_policy,
                        identity=self.stage.identity_fasta)  # fmt: skip
        kept = 0
        with committer:
            for ref in refs:
                part = load_part(Path(ref.directory))
                codes = read_codes(self.work / "decide" / "codes.i1", ref.base, ref.valid)
                selected = np.flatnonzero(codes == KEEP)
                keys, clusters = self.stage.keys_and_clusters(kept, int(selected.size))
                router.route(part, selected, self.assign.indices(keys), clusters, kept)
                kept += int(selected.size)
            for writer in writers.values():
                writer.flush()
        self.pieces = router.pieces
        for split, writer in writers.items():
            self.split_entries[split] = list(writer.shards)
            self.split_stats[split] = writer.stats
            self.reused += writer.reused

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
        remove_partials(self.work)
        units = plan_units(files, cfg.chunk_bytes)
        self.assign = SplitAssigner(cfg.split_fractions, cfg.split["seed"])
        self.truncated: dict[int, dict] = {}
        self.bytes_read = self.records_parsed = self.reused = self.pieces = 0
        self.split_entries: dict[str, list[dict]] = {split: [] for split in SPLITS}
        self.split_stats = {split: SequenceStats() for split in SPLITS}
        self.stage = None
        if self.clustering:
            self.stage = ClusterStage(self.work, cfg.cluster, threads=cfg.num_workers)
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
            disable=not cfg.progress or not sys.stderr.isatty(),
            mininterval=0.5,
        )
        self.executor = make_executor(cfg.executor, cfg.num_workers, cfg.ray)
        clock = _StageClock()
        try:
            with self.progress:
                refs = self.parse(files, units)
            clock.lap("parse")
            flags, partitions = self.decide(refs)
            clock.lap("deduplicate")
            tasks = self.report(refs, flags, partitions)
            publish_report(quarantine, quarantine_path)
            publish_report(duplicates, duplicates_path)
            clock.lap("report")
            if self.stage is not None:
                self.route_clusters(refs)
            else:
                self.write_shards(tasks)
            clock.lap("shards")
        except OSError as err:
            raise OutputError(write_failure(err, self.output)) from None
        finally:
            self.executor.close()
        identity = None if self.stage is None else self.stage.identity_report()
        counts = self.check_accounting(self.merger.kept)
        if counts["written"] == 0:  # empty is an error, not a dataset: publish nothing
            raise EmptyDatasetError(empty_message(inputs, counts, quarantine_path))
        stats = self.build_stats(counts, identity)
        write_json_atomic(self.output / "stats.json", stats)
        manifest = self.manifest(fingerprint, inputs, counts)
        write_manifest(self.output, manifest)
        finish(self.output, cfg.keep_work)
        self.upload(manifest)
        elapsed = time.perf_counter() - started
        summary = self.summary(manifest, elapsed, stats)
        summary["reused_shards"] = self.reused
        summary["stage_seconds"] = clock.laps
        summary["driver_peak_rss_mb_after_stage"] = clock.peak_rss_mb
        summary["partitions"] = partitions
        return summary

    def upload(self, manifest: dict) -> None:
        """For an fsspec output: copy the finished dataset there (manifest last), drop the
        local staging copy."""
        if not self.remote_output:
            return
        shards = [s["path"] for split in manifest["splits"].values() for s in split["shards"]]
        reports = ["quarantine.tsv", "duplicates.tsv", "stats.json", MANIFEST_NAME]
        upload_output(self.output, self.remote_output, shards + reports)
        remove_staging(self.output)

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
            "written_pieces": self.pieces,
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
        in_shards = sum(e["records"] for entries in self.split_entries.values() for e in entries)
        if in_shards != self.pieces:
            raise AccountingError(
                f"accounting violated: {self.pieces:,} pieces routed but {in_shards:,} in shards"
            )
        return counts

    def build_stats(self, counts: dict, identity: dict | None) -> dict:
        total = SequenceStats()
        splits = {}
        for split, split_stats in self.split_stats.items():
            splits[split] = split_stats.to_dict()
            total = total.merge(split_stats)
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
            "generator": {"name": SOURCE, "version": __version__},
            "fingerprint": fingerprint,
            "inputs": entries,
            "config": self.config.output_config(),
            "splits": {s: _split_summary(entries) for s, entries in self.split_entries.items()},
            "counts": counts,
            "stats": "stats.json",
            "quarantine": "quarantine.tsv",
            "duplicates": "duplicates.tsv",
        }

    def summary(self, manifest: dict, seconds: float, stats: dict | None) -> dict:
        bytes_read = getattr(self, "bytes_read", 0)
        return {
            "output": self.remote_output or str(self.output),
            "manifest": str(self.output / MANIFEST_NAME),
            "counts": manifest["counts"],
            "splits": manifest["splits"],
            "max_test_train_identity": (stats or {}).get("max_test_train_identity"),
            "seconds": seconds,
            "bytes_read": bytes_read,
            "mb_per_s": bytes_read / 1e6 / seconds if seconds > 0 else 0.0,
            "records_per_s": manifest["counts"]["read"] / seconds if seconds > 0 else 0.0,
        }


class _StageClock:
    """Wall seconds of each stage and this process's peak RSS at its end (in the summary:
    where a larger cluster would help, and which stage sets the memory peak)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now
        # ru_maxrss is in KiB on Linux (bytes on macOS, where this figure reads 1024x high).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_rss_mb[name] = round(peak / 1024, 1)


def _split_summary(entries: list[dict]) -> dict:
    """The manifest's entry for one split."""
    return {
        "records": sum(e["records"] for e in entries),
        "residues": sum(e["residues"] for e in entries),
        "shards": list(entries),
    }


def _ids_of(
    readers: ReaderCache, refs: list[PartRef], bases: np.ndarray, ordinals: np.ndarray
) -> list[str]:
    """Ids of the records at global ``ordinals`` (in that order), read from their parts."""
    if not ordinals.size:
        return []
    owner = np.searchsorted(bases, ordinals, side="right") - 1
    out: list[str] = [""] * ordinals.size
    for index in np.unique(owner).tolist():
        rows = np.flatnonzero(owner == index)
        ids = readers.get(refs[index].directory).ids_at(ordinals[rows] - bases[index])
        for row, record_id in zip(rows.tolist(), ids, strict=True):
            out[row] = record_id
    return out


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
