"""Embedding extraction: a FASTA file in, one HDF5 file of embeddings out (``wensu-embed``).

Python::

    from wensu.embed import EmbedSettings, embed
    summary = embed("run/last.ckpt", "proteins.fasta.gz", "emb.h5", pooling=["mean", "per_residue"])
    settings = EmbedSettings(pooling=("mean",), max_tokens=16384)  # the same options, kept
    summary = embed("run/last.ckpt", "proteins.fasta.gz", "emb.h5", settings)

Command line (a Hydra app, ``conf/embed.yaml``)::

    wensu-embed checkpoint=run/last.ckpt input=proteins.fasta.gz output=emb.h5 \\
        layers=[-1] pooling=[mean,per_residue,cls] max_tokens=16384 device=cuda precision=bf16

The checkpoint is a wensu checkpoint or an ESM-2 file or folder (anything ``wensu.load`` takes).
The file layout is documented in :mod:`wensu.embed.file_format` (reader: ``wensu.embeddings.read``).

* Throughput: records are read in sort buffers, sorted by length (longest first) and grouped
  into batches of at most ``max_tokens`` padded tokens, run under ``torch.inference_mode`` (with
  bf16 autocast for ``precision=bf16``); ``devices=N`` runs one process per device on an
  interleaved share of the records, and their outputs merge into one file.
* Any length: sequences longer than the trained context (``max_length``: the value stored with
  the checkpoint, else 1022 residues) go through the chunked backend (windowed models) or
  overlapping stitched windows (dense models); see :mod:`wensu.embed.compute`. MoE capacity
  limits are lifted while embedding, so no sequence's vectors depend on its batch-mates.
* Safety: invalid records go to ``<output>.quarantine.tsv`` (id, reason, detail) and are counted;
  duplicate ids are an error (or ``dedup=true`` keeps the first); a killed run resumes where it
  stopped and gives the same bytes as an uninterrupted one (see :mod:`wensu.embed.writer`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wensu import __version__
from wensu.embed.compute import ComputeSettings, SequenceEmbedder
from wensu.embed.file_format import FORMAT_VERSION
from wensu.embed.inputs import scan_input, write_quarantine
from wensu.embed.model import LoadedModel, load_model, model_from_source
from wensu.embed.settings import EmbedError, EmbedSettings
from wensu.embed.worker import (
    ProgressBar,
    WorkerJob,
    cpu_threads_per_worker,
    run_ray_workers,
    run_worker,
    run_workers,
)
from wensu.embed.writer import (
    check_writable,
    finalize_h5,
    output_lock,
    per_sequence_ids,
    prepare_output,
    reusable,
    write_dir_attrs,
)


@dataclass
class EmbedSummary:
    """What one call of :func:`embed` did."""

    output: Path
    written: int  # sequences embedded by this call
    skipped: int  # sequences already complete in the output
    quarantined: int
    duplicates: int
    total: int  # sequences in the output after this call
    residues: int  # residues embedded by this call
    seconds: float


def resolve_device(device: str, rank: int = 0) -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; ``cuda`` with rank r → ``cuda:r``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise EmbedError(f"device {device!r} is not a torch device ({err})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise EmbedError(f"device {device!r} requested but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", rank)
    return resolved


def build_embedder(job: WorkerJob) -> SequenceEmbedder:
    """Load the model named in ``job`` onto its device (runs inside worker processes)."""
    encoder, alphabet = model_from_source(job.model_source)
    return SequenceEmbedder(encoder, alphabet, job.settings, resolve_device(job.device, job.rank))


def embed(
    checkpoint_or_model: Any,
    input: str | os.PathLike,
    output: str | os.PathLike,
    settings: EmbedSettings | None = None,
    **options: Any,
) -> EmbedSummary:
    """Embed every valid record of a FASTA file into ``output``; resumes an interrupted run.

    Args:
        checkpoint_or_model: path of a wensu checkpoint or ESM-2 file/folder, or an ``Encoder``.
        input: FASTA file (``.fasta`` or ``.fasta.gz``).
        output: ``.h5`` file (``format="h5"``) or a folder of per-sequence files (``npz``/``pt``).
        settings: what to embed and how (:class:`EmbedSettings`; default: its defaults).
        **options: fields of :class:`EmbedSettings` given as keywords (``pooling=["mean"]``,
            ``max_tokens=16384``, ...); they override ``settings``.
    """
    started = time.perf_counter()
    settings = replace(settings or EmbedSettings(), **options)
    settings.validate()
    input_path, output_path = Path(input), Path(output)
    if input_path.exists() and not input_path.is_file():
        raise EmbedError(
            f"input {input_path}: not a regular file (a pipe, FIFO or device can be read only "
            "once; wensu-embed reads its input twice): save it to a file first"
        )
    if not input_path.is_file():
        raise EmbedError(f"input {input_path}: no such file")
    first_device = resolve_device(settings.device)
    if first_device.type == "cuda" and settings.devices > torch.cuda.device_count():
        raise EmbedError(
            f"devices={settings.devices} but only {torch.cuda.device_count()} CUDA devices"
        )
    if settings.precision == "auto":
        settings = replace(settings, precision="bf16" if first_device.type == "cuda" else "fp32")
    fmt = settings.format
    with _as_embed_error():
        check_writable(output_path, fmt)
        model = load_model(checkpoint_or_model)
        compute = settings.compute_settings(model.encoder.cfg.num_layers, model.trained_context)
        scan = scan_input(input_path, dedup=settings.dedup)
        stored = _output_settings(model, compute, fmt, settings.per_residue_dtype)
        if settings.beyond_trained_context:  # recorded: a rerun must ask for it again
            stored["beyond_trained_context"] = True
    with contextlib.ExitStack() as stack:
        with _as_embed_error():
            stack.enter_context(output_lock(output_path, fmt))
            entries = prepare_output(output_path, fmt, stored)
            done = reusable(output_path, entries, scan.ids, scan.digests)
        write_quarantine(output_path, scan.quarantined)
        job = WorkerJob(
            input_path=input_path,
            selected=scan.ordinals,
            done=done,
            output=output_path,
            fmt=fmt,
            per_residue_dtype=settings.per_residue_dtype,
            segment_sequences=settings.segment_sequences,
            sort_buffer_residues=settings.sort_buffer_residues,
            settings=compute,
            device=settings.device,
            model_source=model.source_for_workers,
        )
        todo = [n for i, n in zip(scan.ids, scan.lengths.tolist(), strict=True) if i not in done]
        written, residues = _run(job, model, settings, first_device, todo)
        attrs = _file_attrs(model, compute, stored)
        if fmt == "h5":
            total = finalize_h5(output_path, attrs)
        else:
            write_dir_attrs(output_path, attrs)
            total = len(per_sequence_ids(output_path, fmt))
    return EmbedSummary(
        output=output_path,
        written=written,
        skipped=len(done),
        quarantined=len(scan.quarantined),
        duplicates=scan.duplicates,
        total=total,
        residues=residues,
        seconds=time.perf_counter() - started,
    )


def _run(
    job: WorkerJob,
    model: LoadedModel,
    settings: EmbedSettings,
    first_device: torch.device,
    todo_lengths: list[int],
) -> tuple[int, int]:
    """Embed what is not done yet: in this process, one process per device, or Ray tasks."""
    if not todo_lengths:
        return 0, 0
    devices = settings.devices
    bar = ProgressBar(len(todo_lengths), sum(todo_lengths), enabled=settings.progress)
    try:
        if devices == 1 and settings.executor == "local":
            embedder = SequenceEmbedder(model.encoder, model.alphabet, job.settings, first_device)
            written = run_worker(job, embedder, bar.update)
        else:
            threads = cpu_threads_per_worker(devices) if first_device.type == "cpu" else None
            jobs = [replace(job, rank=r, world=devices, threads=threads) for r in range(devices)]
            if settings.executor == "ray":
                written = run_ray_workers(jobs, build_embedder, bar.update, settings.ray_address)
            else:
                written = run_workers(jobs, build_embedder, bar.update)
    finally:
        residues = bar.close()
    return written, residues


@contextlib.contextmanager
def _as_embed_error() -> Iterator[None]:
    """User-facing errors of the steps (checkpoint, input, output) become :class:`EmbedError`."""
    try:
        yield
    except EmbedError:
        raise
    except ValueError as err:
        raise EmbedError(str(err)) from None


def _output_settings(
    model: LoadedModel, compute: ComputeSettings, fmt: str, per_residue_dtype: str
) -> dict[str, Any]:
    """The settings that change the stored numbers; a rerun must match them to add to a file."""
    windowed = model.encoder.cfg.attention.window is not None
    return {
        "format": fmt,
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": model.sha256,
        "layers": list(compute.layers),
        "pooling": list(compute.pooling),
        "per_residue_dtype": per_residue_dtype,
        "precision": compute.precision,
        "max_length": compute.max_length,
        "long_sequences": (
            "chunked" if windowed else {"window": compute.window, "stride": compute.stride}
        ),
    }


def _file_attrs(
    model: LoadedModel, compute: ComputeSettings, settings: dict[str, Any]
) -> dict[str, Any]:
    cfg = model.encoder.cfg
    return {
        "format_version": FORMAT_VERSION,
        "checkpoint": model.description,
        "checkpoint_sha256": model.sha256,
        "layers": np.asarray(compute.layers, dtype=np.int64),
        "pooling": list(compute.pooling),
        "num_layers": cfg.num_layers,
        "d_model": cfg.d_model,
        "wensu_version": __version__,
        "model_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "settings": json.dumps(settings, sort_keys=True),
    }
