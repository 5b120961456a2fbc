"""Embedding extraction: a FASTA file in, one HDF5 file of embeddings out (``wensu-embed``).

Python::

    from wensu.embed import embed
    summary = embed("run/last.ckpt", "proteins.fasta.gz", "emb.h5", pooling=["mean", "per_residue"])

Command line (a Hydra app, ``conf/embed.yaml``)::

    wensu-embed checkpoint=run/last.ckpt input=proteins.fasta.gz output=emb.h5 \\
        layers=[-1] pooling=[mean,per_residue,cls] max_tokens=16384 device=cuda precision=bf16

The checkpoint is a wensu checkpoint or an ESM-2 file or folder (anything ``wensu.load`` takes).
The file layout is documented in :mod:`wensu.embeddings` (reader: ``wensu.embeddings.read``).

* Throughput: records are read in sort buffers, sorted by length (longest first) and grouped
  into batches of at most ``max_tokens`` padded tokens, run under ``torch.inference_mode`` (with
  bf16 autocast for ``precision=bf16``); ``devices=N`` runs one process per device on an
  interleaved share of the records, and their outputs merge into one file.
* Any length: sequences longer than the trained context (``max_length``: the value stored with
  the checkpoint, else 1022 residues) go through the chunked backend (windowed models) or
  overlapping stitched windows (dense models); see :mod:`wensu.embed_compute`. MoE capacity
  limits are lifted while embedding, so no sequence's vectors depend on its batch-mates.
* Safety: invalid records go to ``<output>.quarantine.tsv`` (id, reason, detail) and are counted;
  duplicate ids are an error (or ``dedup=true`` keeps the first); a killed run resumes where it
  stopped and gives the same bytes as an uninterrupted one (see :mod:`wensu.embed_writer`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wensu.embed_compute import ComputeSettings, SequenceEmbedder, resolve_layers
from wensu.embed_input import scan_input, write_quarantine
from wensu.embed_model import LoadedModel, load_model, model_from_source
from wensu.embed_worker import (
    ProgressBar,
    WorkerError,
    WorkerJob,
    cpu_threads_per_worker,
    run_worker,
    run_workers,
)
from wensu.embed_writer import (
    FORMATS,
    check_writable,
    finalize_h5,
    output_lock,
    per_sequence_ids,
    prepare_output,
    write_dir_attrs,
)
from wensu.embeddings import FORMAT_VERSION, KINDS

DEFAULT_MAX_LENGTH = 1022
PRECISIONS = ("fp32", "bf16", "auto")
PER_RESIDUE_DTYPES = ("float32", "float16")


class EmbedError(ValueError):
    """A user-facing problem with the embedding request (options, input, checkpoint, output)."""


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


def _check_options(
    pooling: Sequence[str],
    fmt: str,
    precision: str,
    dtype: str,
    devices: int,
    max_tokens: int,
    device: str,
) -> None:
    if devices < 1 or max_tokens < 1:
        raise EmbedError(f"devices and max_tokens must be >= 1, got {devices} and {max_tokens}")
    if devices > 1 and device not in ("auto", "cpu", "cuda"):
        raise EmbedError(f"devices={devices} needs device=auto, cpu or cuda, got {device!r}")
    unknown = [p for p in pooling if p not in KINDS]
    if unknown or not pooling:
        raise EmbedError(
            f"pooling must be a non-empty subset of {list(KINDS)}, got {list(pooling)}"
        )
    if fmt not in FORMATS:
        raise EmbedError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if precision not in PRECISIONS:
        raise EmbedError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if dtype not in PER_RESIDUE_DTYPES:
        raise EmbedError(
            f"per_residue_dtype must be one of {list(PER_RESIDUE_DTYPES)}, got {dtype!r}"
        )


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
    *,
    layers: Sequence[int] = (-1,),
    pooling: Sequence[str] = ("mean",),
    max_tokens: int = 8192,
    device: str = "auto",
    devices: int = 1,
    precision: str = "fp32",
    format: str = "h5",
    per_residue_dtype: str = "float32",
    max_length: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    dedup: bool = False,
    sort_buffer_residues: int = 20_000_000,
    segment_sequences: int = 1000,
    progress: bool = True,
) -> EmbedSummary:
    """Embed every valid record of a FASTA file into ``output``; resumes an interrupted run.

    Args:
        checkpoint_or_model: path of a wensu checkpoint or ESM-2 file/folder, or an ``Encoder``.
        input: FASTA file (``.fasta`` or ``.fasta.gz``).
        output: ``.h5`` file (``format="h5"``) or a folder of per-sequence files (``npz``/``pt``).
        layers: layers to keep (0 = embedding output, -1 = final normed output).
        pooling: any of ``mean``, ``per_residue``, ``cls``.
        max_tokens: padded-token budget per batch (a longer single sequence runs alone).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``devices``: worker processes.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA, else fp32).
        max_length: trained context in residues (default: from the checkpoint, else 1022).
        window, stride: stitched windows for over-long sequences of dense models.
        dedup: keep the first of records with the same id instead of failing.
    """
    started = time.perf_counter()
    _check_options(pooling, format, precision, per_residue_dtype, devices, max_tokens, device)
    pooling = [kind for kind in KINDS if kind in pooling]
    input_path, output_path = Path(input), Path(output)
    if not input_path.is_file():
        raise EmbedError(f"input {input_path}: no such file")
    first_device = resolve_device(device)
    if first_device.type == "cuda" and devices > torch.cuda.device_count():
        raise EmbedError(f"devices={devices} but only {torch.cuda.device_count()} CUDA devices")
    if precision == "auto":
        precision = "bf16" if first_device.type == "cuda" else "fp32"
    with _as_embed_error():
        check_writable(output_path, format)
        model = load_model(checkpoint_or_model)
        compute = _compute_settings(model, layers, pooling, max_length, window, stride)
        compute = replace(compute, max_tokens=max_tokens, precision=precision)
        scan = scan_input(input_path, dedup=dedup)
        settings = _output_settings(model, compute, format, per_residue_dtype)
    with contextlib.ExitStack() as stack:
        with _as_embed_error():
            stack.enter_context(output_lock(output_path, format))
            done = prepare_output(output_path, format, settings) & set(scan.ids)
        write_quarantine(output_path, scan.quarantined)
        job = WorkerJob(
            input_path=input_path,
            selected=scan.ordinals,
            done=done,
            output=output_path,
            fmt=format,
            per_residue_dtype=per_residue_dtype,
            segment_sequences=segment_sequences,
            sort_buffer_residues=sort_buffer_residues,
            settings=compute,
            device=device,
            model_source=model.source_for_workers,
        )
        todo = [n for i, n in zip(scan.ids, scan.lengths.tolist(), strict=True) if i not in done]
        written, residues = _run(job, model, devices, first_device, todo, progress)
        attrs = _file_attrs(model, compute, settings)
        if format == "h5":
            total = finalize_h5(output_path, attrs)
        else:
            write_dir_attrs(output_path, attrs)
            total = len(per_sequence_ids(output_path, format))
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
    devices: int,
    first_device: torch.device,
    todo_lengths: list[int],
    progress: bool,
) -> tuple[int, int]:
    """Embed what is not done yet, in this process or one process per device."""
    if not todo_lengths:
        return 0, 0
    bar = ProgressBar(len(todo_lengths), sum(todo_lengths), enabled=progress)
    try:
        if devices == 1:
            embedder = SequenceEmbedder(model.encoder, model.alphabet, job.settings, first_device)
            written = run_worker(job, embedder, bar.update)
        else:
            threads = cpu_threads_per_worker(devices) if first_device.type == "cpu" else None
            jobs = [replace(job, rank=r, world=devices, threads=threads) for r in range(devices)]
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


def _compute_settings(
    model: LoadedModel,
    layers: Sequence[int],
    pooling: Sequence[str],
    max_length: int | None,
    window: int | None,
    stride: int | None,
) -> ComputeSettings:
    context = max_length or model.trained_context or DEFAULT_MAX_LENGTH
    window = window or context
    stride = stride or max(1, window // 2)
    if context < 1 or window < 1 or not 1 <= stride <= window:
        raise EmbedError(
            f"need max_length >= 1 and 1 <= stride <= window, got max_length={context}, "
            f"window={window}, stride={stride}"
        )
    absolute = resolve_layers(layers, model.encoder.cfg.num_layers)
    return ComputeSettings(absolute, tuple(pooling), context, window, stride, max_tokens=1)


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
    from wensu import __version__

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


def _as_list(value: Any) -> list:
    """``layers=-1`` and ``pooling=mean`` on the command line mean one-element lists."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _run_from_config(cfg: Any) -> EmbedSummary:
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    for key in ("checkpoint", "input", "output"):
        if options.get(key) in (None, ""):
            raise EmbedError(
                f"missing {key}=... (e.g. wensu-embed checkpoint=model.ckpt "
                "input=proteins.fasta output=emb.h5)"
            )
    return embed(
        options["checkpoint"],
        options["input"],
        options["output"],
        layers=_as_list(options["layers"]),
        pooling=_as_list(options["pooling"]),
        max_tokens=int(options["max_tokens"]),
        device=str(options["device"]),
        devices=int(options["devices"]),
        precision=str(options["precision"]),
        format=str(options["format"]),
        per_residue_dtype=str(options["per_residue_dtype"]),
        max_length=options["max_length"],
        window=options["window"],
        stride=options["stride"],
        dedup=bool(options["dedup"]),
        sort_buffer_residues=int(options["sort_buffer_residues"]),
        segment_sequences=int(options["segment_sequences"]),
        progress=bool(options["progress"]),
    )


def _hydra_task(cfg: Any) -> None:
    from omegaconf.errors import MissingMandatoryValue

    try:
        summary = _run_from_config(cfg)
    except MissingMandatoryValue as err:
        print(f"error: missing required option {err.full_key}=...", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(
        f"wensu-embed: {summary.written} embedded ({summary.residues:,} residues), "
        f"{summary.skipped} already done, {summary.quarantined} quarantined, "
        f"{summary.duplicates} duplicates dropped; {summary.total} in {summary.output} "
        f"({summary.seconds:.1f} s)",
        file=sys.stderr,
    )


def main() -> None:
    """Console script ``wensu-embed`` (Hydra app over ``conf/embed.yaml``)."""
    import hydra

    hydra.main(config_path="pkg://wensu.conf", config_name="embed", version_base="1.3")(
        _hydra_task
    )()


if __name__ == "__main__":
    main()
