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

from . import cluster as mmseqs
from .config import PreprocessConfig, load_config
from .dedup import KEEP, Merger, open_report, publish_report
from .errors import AccountingError, InputError
from .inputs import InputFile, Unit, plan_units, resolve_inputs
from .parse import DIGEST_SIZE, ParseSettings, Part, load_part, parse_unit, part_path
from .sharding import ShardJournal, SplitWriter
from .split import SplitAssigner, cut_long
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
        )
        tasks = [(files[u.file_index].path, u, self.work, settings) for u in units]
        workers = min(cfg.num_workers, len(tasks))
        if workers <= 1:
            yield from self._consume(map(_parse_task, tasks), files)
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            yield from self._consume(pool.imap(_parse_task, tasks, chunksize=1), files)

    def _consume(self, results, files: list[InputFile]) -> Iterator[Part]:
        for result in results:
            if "error" in result:
                raise InputError(result["error"] + self._truncation_hint(result["error"]))
            for meta in result["parts"]:
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
                with_clusters=self.clustering,
                source=SOURCE,
                on_write=lambda _entry: self.pause("shard"),
            )
            for split in SPLITS
        }

    def route(self, part: Part, codes: np.ndarray, first_kept: int) -> int:
        """Send ``part``'s kept records to their splits; returns the number of kept records."""
        cfg = self.config
        kept = np.flatnonzero(codes == KEEP).tolist()
        offsets = part.seq_offsets.tolist()
        residues, digests, taxa = part.residues.tobytes(), part.digests, part.taxa.tolist()
        max_length, policy = cfg.max_length, cfg.long_policy
        writers, assign, ids = self.writers, self.assign, part.ids
        identity = self.identity_fasta
        for n, i in enumerate(kept):
            sequence = residues[offsets[i] : offsets[i + 1]]
            index = first_kept + n
            if self.clustering:
                rep = int(self.representative[index])
                key, cluster_id = self.kept_digests[rep], self.kept_ids[rep]
            else:
                key, cluster_id = digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE], None
            split = assign(key)
            if identity is not None and split in identity:
                identity[split].write(b">%d\n%s\n" % (index, sequence))
            if max_length is None or len(sequence) <= max_length:
                self.pieces += 1
                writers[split].add(ids[i], sequence, cluster_id, taxa[i])
                continue
            pieces = cut_long(ids[i], sequence, max_length, policy)
            self.pieces += len(pieces)
            for piece_id, piece in pieces:
                writers[split].add(piece_id, piece, cluster_id, taxa[i])
        return len(kept)

    # -- stage 3: clustering ----------------------------------------------------------------
    def collect_for_clustering(self, part: Part, codes: np.ndarray) -> None:
        """Remember kept ids/digests (cluster keys) and write kept sequences for MMseqs2."""
        offsets = part.seq_offsets.tolist()
        for i in np.flatnonzero(codes == KEEP).tolist():
            self.kept_ids.append(part.ids[i])
            self.kept_digests.append(part.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
            if self.cluster_fasta is not None:
                sequence = part.residues[offsets[i] : offsets[i + 1]].tobytes()
                self.cluster_fasta.write(b">%d\n%s\n" % (len(self.kept_ids) - 1, sequence))

    def start_clustering(self) -> None:
        self.kept_ids: list[str] = []
        self.kept_digests: list[bytes] = []
        directory = self.work / "cluster"
        directory.mkdir(parents=True, exist_ok=True)
        self.cluster_cache = directory / "representative.npy"
        done = self.cluster_cache.exists()
        self.cluster_fasta = None if done else open(directory / "kept.fasta", "wb")

    def cluster(self) -> None:
        """Representative (kept index) of every kept record, from cache or MMseqs2."""
        if self.cluster_fasta is None:
            self.representative = np.load(self.cluster_cache, allow_pickle=False)
            return
        self.cluster_fasta.close()
        cfg = self.config.cluster
        count = len(self.kept_ids)
        log.info("clustering %d sequences with MMseqs2 easy-linclust", count)
        self.representative = mmseqs.linclust(
            Path(self.cluster_fasta.name),
            self.work / "cluster" / "linclust",
            count,
            min_seq_id=cfg["min_seq_id"],
            coverage=cfg["coverage"],
            cov_mode=cfg["cov_mode"],
            threads=self.config.num_workers,
            mmseqs=cfg["mmseqs"],
        )
        tmp = self.cluster_cache.with_name("representative.tmp.npy")
        np.save(tmp, self.representative)
        tmp.replace(self.cluster_cache)

    def identity_report(self) -> dict | None:
        if self.identity_fasta is None:
            return None
        for handle in self.identity_fasta.values():
            handle.close()
        directory = self.work / "identity"
        return mmseqs.max_identity(
            directory / "test.fasta",
            directory / "train.fasta",
            directory / "search",
            coverage=self.config.cluster["coverage"],
            cov_mode=self.config.cluster["cov_mode"],
            min_seq_id=self.config.cluster["min_seq_id"],
            sensitivity=self.config.cluster["search_sensitivity"],
            threads=self.config.num_workers,
            mmseqs=self.config.cluster["mmseqs"],
        )

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
        self.pieces = 0
        self.identity_fasta = None
        if self.clustering and cfg.cluster["identity_report"]:
            (self.work / "identity").mkdir(parents=True, exist_ok=True)
            self.identity_fasta = {
                s: open(self.work / "identity" / f"{s}.fasta", "wb") for s in ("train", "test")
            }
        journal = ShardJournal(self.work / "shards.jsonl")
        self.writers = self._writers(journal)
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
        if self.clustering:
            self.start_clustering()
        with self.progress:
            for part in self.parsed_parts(files, units):
                codes = self.merger.merge(part)
                if self.clustering:
                    self.collect_for_clustering(part, codes)
                    merged.append((part.meta["unit"], part.meta["part"], codes))
                else:
                    kept += self.route(part, codes, kept)
            publish_report(quarantine, quarantine_path)
            publish_report(duplicates, duplicates_path)
            if self.clustering:
                self.cluster()
                for unit, index, codes in merged:
                    part = load_part(part_path(self.work, unit, index))
                    kept += self.route(part, codes, kept)
            for writer in self.writers.values():
                writer.flush()
        identity = self.identity_report()
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
        in_shards = sum(w.summary()["records"] for w in self.writers.values())
        if in_shards != self.pieces:
            raise AccountingError(
                f"accounting violated: {self.pieces:,} pieces routed but {in_shards:,} in shards"
            )
        return counts

    def build_stats(self, counts: dict, identity: dict | None) -> dict:
        total = SequenceStats()
        splits = {}
        for split, writer in self.writers.items():
            splits[split] = writer.stats.to_dict()
            total = total.merge(writer.stats)
        clustering = None
        if self.clustering:
            clusters = int(np.unique(self.representative).size)
            clustering = {"clusters": clusters, "sequences": int(self.representative.size)}
            if identity is not None:
                clustering["test_vs_train"] = identity
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
    summary = _Run(config).run()
    if show_summary:
        summary_table(summary)
    return summary
