"""The embedding loop of one worker, and one worker process per device for ``devices=N``
(or one Ray task per worker with ``executor=ray``).

A worker streams its share of the input (records ``i`` with ``i % world == rank`` among the
selected records), sorts each buffer by length, runs token-budget batches and writes every
sequence as soon as its batch is done. Batches are planned over all selected records, including
those already written by an earlier run, and a batch is skipped only when all of its sequences
are done, so every sequence is computed with the same batch-mates as in an uninterrupted run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from wensu.embed.batching import sort_buffers, token_budget_batches
from wensu.embed.compute import ComputeSettings, SequenceEmbedder
from wensu.embed.inputs import iter_selected, sequence_digest
from wensu.embed.writer import PerSequenceFileWriter, SegmentWriter, parts_dir_of
from wensu.progress import progress_bar
from wensu.ray_cluster import connect, failure_line

Progress = Callable[[int, int], None]  # (sequences, residues) just written
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class WorkerJob:
    """Everything a worker needs; picklable, so it can cross into a spawned process."""

    input_path: Path
    selected: np.ndarray  # ordinals (positions in the FASTA record stream) of records to embed
    done: set[str]
    output: Path
    fmt: str
    per_residue_dtype: str
    segment_sequences: int
    sort_buffer_residues: int
    settings: ComputeSettings
    device: str
    rank: int = 0
    world: int = 1
    threads: int | None = None
    model_source: Any = None  # ("path", str) or ("weights", config dict, state dict)


class WorkerError(RuntimeError):
    """A worker process failed or died; the message carries its error."""


def _make_writer(job: WorkerJob) -> SegmentWriter | PerSequenceFileWriter:
    if job.fmt == "h5":
        return SegmentWriter(parts_dir_of(job.output), job.per_residue_dtype, job.segment_sequences)
    return PerSequenceFileWriter(job.output, job.fmt, job.per_residue_dtype)


def _own_records(job: WorkerJob) -> Iterator[tuple[int, str, str]]:
    mine = job.selected[job.rank :: job.world]
    yield from iter_selected(job.input_path, mine)


def run_worker(job: WorkerJob, embedder: SequenceEmbedder, progress: Progress) -> int:
    """Embed this worker's records that are not done yet; returns how many were written."""
    writer = _make_writer(job)
    written = 0
    try:
        records = _own_records(job)
        for buffer in sort_buffers(records, lambda r: len(r[2]), job.sort_buffer_residues):
            long_records = [r for r in buffer if embedder.is_long(len(r[2]))]
            short_records = [r for r in buffer if not embedder.is_long(len(r[2]))]
            long_records.sort(key=lambda r: (-len(r[2]), r[0]))
            for _, record_id, sequence in long_records:
                if record_id in job.done:
                    continue
                embedding = embedder.embed_long(sequence)
                writer.write(record_id, len(sequence), embedding, sequence_digest(sequence))
                written += 1
                progress(1, len(sequence))
            lengths = [len(r[2]) for r in short_records]
            for batch in token_budget_batches(lengths, job.settings.max_tokens):
                members = [short_records[i] for i in batch]
                if all(r[1] in job.done for r in members):
                    continue
                results = embedder.embed_batch([r[2] for r in members])
                for (_, record_id, sequence), result in zip(members, results, strict=True):
                    if record_id in job.done:
                        continue
                    writer.write(record_id, len(sequence), result, sequence_digest(sequence))
                    written += 1
                    progress(1, len(sequence))
    finally:
        writer.close()
    return written


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed parent: it would keep writing into the output."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(
    job: WorkerJob,
    messages: Any,
    build: Callable[[WorkerJob], SequenceEmbedder],
    parent_pid: int,
) -> None:
    """Entry point of a spawned worker process: report progress and the outcome on ``messages``."""
    _die_with_parent(parent_pid)
    try:
        if job.threads:
            torch.set_num_threads(job.threads)
        embedder = build(job)
        written = run_worker(job, embedder, lambda n, r: messages.put(("progress", n, r)))
        messages.put(("done", job.rank, written))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent
        detail = str(err) if isinstance(err, ValueError) else traceback.format_exc()
        messages.put(("error", job.rank, detail))


def run_workers(
    jobs: Sequence[WorkerJob], build: Callable[[WorkerJob], SequenceEmbedder], progress: Progress
) -> int:
    """Run one spawned process per job; returns the number of sequences written by all."""
    context = mp.get_context("spawn")
    messages = context.Queue()
    processes = [
        context.Process(target=_worker_main, args=(job, messages, build, os.getpid()), daemon=True)
        for job in jobs
    ]
    for process in processes:
        process.start()
    finished: dict[int, int] = {}
    errors: list[str] = []
    try:
        while len(finished) + len(errors) < len(jobs):
            try:
                kind, *payload = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead and messages.empty():
                    codes = ", ".join(f"pid {p.pid} exit {p.exitcode}" for p in dead)
                    raise WorkerError(f"embedding worker died ({codes})") from None
                continue
            if kind == "progress":
                progress(*payload)
            elif kind == "done":
                finished[payload[0]] = payload[1]
            else:
                errors.append(f"worker {payload[0]}: {payload[1]}")
    finally:
        for process in processes:
            process.join(timeout=None if not errors else 5)
            if process.is_alive():
                process.kill()
    if errors:
        raise WorkerError("; ".join(errors))
    return sum(finished.values())


def _ray_worker(job: WorkerJob, build: Callable[[WorkerJob], SequenceEmbedder], messages) -> int:
    """One worker as a Ray task: progress goes to the driver through a Ray queue."""
    if job.threads:
        torch.set_num_threads(job.threads)
    return run_worker(job, build(job), lambda n, r: messages.put((n, r)))


def run_ray_workers(
    jobs: Sequence[WorkerJob],
    build: Callable[[WorkerJob], SequenceEmbedder],
    progress: Progress,
    address: str | None,
    max_retries: int = 3,
) -> int:
    """Run one Ray task per job (``executor=ray``); returns the sequences written by all.

    A task whose worker dies is retried by Ray; it re-embeds its share minus what was done
    when the run started, and the merge keys groups by id, so the output is the same.
    """
    ray, started = connect(address, None, WorkerError)
    from ray.util.queue import Empty, Queue

    messages = Queue()
    gpus = 1 if str(jobs[0].device).startswith("cuda") else 0
    task = ray.remote(_ray_worker).options(
        num_cpus=jobs[0].threads or 1, num_gpus=gpus, max_retries=max_retries
    )
    pending = [task.remote(job, build, messages) for job in jobs]
    written = 0

    def drain() -> None:
        while True:
            try:
                progress(*messages.get_nowait())
            except Empty:
                return

    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for ref in ready:
                try:
                    written += ray.get(ref)
                except ray.exceptions.RayError as err:
                    why = failure_line(err)
                    raise WorkerError(f"embedding worker (Ray task) failed: {why}") from None
        drain()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        messages.shutdown()
        if started:
            ray.shutdown()
    return written


def cpu_threads_per_worker(world: int) -> int:
    """Split the CPU threads evenly between ``world`` worker processes."""
    return max(1, (os.cpu_count() or 1) // world)


class ProgressBar:
    """tqdm on stderr with sequences/s (the bar's rate) and residues/s (postfix)."""

    def __init__(self, total: int, total_residues: int, enabled: bool):
        self.bar = progress_bar(total=total, unit="seq", enabled=enabled, dynamic_ncols=True)
        self.total_residues = total_residues
        self.residues = 0
        self.started = time.perf_counter()
        self._last = 0.0

    def update(self, sequences: int, residues: int) -> None:
        self.residues += residues
        now = time.perf_counter()
        if now - self._last > 0.5 or self.bar.n + sequences >= self.bar.total:
            self._last = now
            rate = self.residues / max(now - self.started, 1e-9)
            done = f"{self.residues:,}/{self.total_residues:,} residues"
            self.bar.set_postfix_str(f"{rate:,.0f} res/s, {done}", refresh=False)
        self.bar.update(sequences)

    def close(self) -> int:
        self.bar.close()
        return self.residues
