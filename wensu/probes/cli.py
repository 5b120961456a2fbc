"""``wensu-eval``: run the probes on one checkpoint and write a report (Hydra app, conf/eval.yaml).

::

    wensu-eval checkpoint=run/last.ckpt                          # full evaluation, all probes
    wensu-eval checkpoint=run/last.ckpt subset=fast output=report # demo size
    wensu-eval checkpoint=esm2_t6_8M_UR50D.pt 'probe=[ss,contacts]'

Each probe writes ``<output>/<probe>/metrics.json`` as soon as it finishes (atomically), with
the checkpoint's SHA-256, the SHA-256 of every data file it read, the seed, its settings and
library versions; a rerun keeps finished probes whose fingerprint matches (``resume=true``), so
a killed run continues with the next probe. ``report.md`` is rewritten after every probe.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from wensu.probes.context import (
    MODEL,
    RANDOM_INIT,
    EvalContext,
    ProbeResult,
    input_hashes,
    versions,
    write_json,
)

PROBE_ORDER = (
    "ss",
    "contacts",
    "amr",
    "perplexity",
    "variants",
    "interpret",
    "robustness",
    "cell_type",
)
DEFAULT_MAX_LENGTH = 1022


class EvalConfigError(ValueError):
    """A wensu-eval option is invalid (the message names it)."""


# name -> "module:function"; imported only when the probe runs (some pull in heavy libraries).
RUNNERS = {
    "ss": "wensu.probes.run_ss:run_ss",
    "contacts": "wensu.probes.run_contacts:run_contacts",
    "amr": "wensu.probes.run_amr:run_amr",
    "perplexity": "wensu.probes.run_perplexity:run_perplexity",
    "variants": "wensu.probes.variant_eval:run_variants",
    "interpret": "wensu.probes.run_interpret:run_interpret",
    "robustness": "wensu.probes.run_robustness:run_robustness",
    "cell_type": "wensu.probes.run_cell_type:run_cell_type",
}


def runner(name: str) -> Callable[[EvalContext, dict], ProbeResult]:
    """The run function of probe ``name`` (see RUNNERS)."""
    import importlib

    module, function = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def resolve_data_dir(value: str | None, required: str = "structure") -> Path:
    """The shared data root holding ``required/``: the option, else $WENSU_SHARED_DATA, else
    ../shared/data next to the working directory or the checkout."""
    candidates = [Path(value)] if value else []
    if not value:
        if os.environ.get("WENSU_SHARED_DATA"):
            candidates.append(Path(os.environ["WENSU_SHARED_DATA"]))
        candidates.append(Path.cwd().parent / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for path in candidates:
        if (path / required).is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise EvalConfigError(
        f"data_dir: no shared data folder (with {required}/) found; tried {tried}"
    )


def probe_settings(cfg: Any, name: str, subset: str) -> dict[str, Any]:
    """A probe's settings as a plain dict, with its ``fast`` block merged for subset=fast."""
    from omegaconf import OmegaConf

    node = cfg.probe[name]
    base = OmegaConf.masked_copy(node, [k for k in node if k != "fast"])
    if subset == "fast" and "fast" in node:
        base = OmegaConf.merge(base, node.fast)
    return OmegaConf.to_container(base, resolve=True)


def set_cpu_threads(value: Any) -> int:
    """Apply ``cpu_threads``: an integer, or ``auto`` = 1 thread when the CPU is already busy
    (1-minute load average >= cores - 1), else torch's default. On a shared, busy CPU the
    intra-op pool waits for cores more than it computes: measured 2-3x slower with 2 threads."""
    if value == "auto":
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 1
        value = 1 if busy else torch.get_num_threads()
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise EvalConfigError(
            f"cpu_threads must be 'auto' or a positive integer, got {value!r}"
        ) from None
    if threads < 1:
        raise EvalConfigError(f"cpu_threads must be 'auto' or a positive integer, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def _device(value: str) -> str:
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise EvalConfigError(f"device={value}: CUDA is not available")
    return value


def build_context(cfg: Any, output: Path) -> tuple[EvalContext, dict[str, Any]]:
    """Load the checkpoint, build its random-init twin and the feature extractors."""
    from wensu.embed_model import load_model
    from wensu.model import count_parameters
    from wensu.probes.baselines import random_init_like
    from wensu.probes.features import EncoderFeatures, FeatureSettings

    loaded = load_model(str(cfg.checkpoint))
    device = _device(str(cfg.device))
    threads = set_cpu_threads(cfg.cpu_threads)
    encoder = loaded.encoder.to(device).eval()
    settings = FeatureSettings(
        layer=int(cfg.layer),
        max_tokens=int(cfg.max_tokens),
        max_length=int(cfg.max_length or loaded.trained_context or DEFAULT_MAX_LENGTH),
        device=device,
        show_progress=bool(cfg.progress),
    )
    twin = random_init_like(encoder, seed=int(cfg.seed))
    encoders = [
        EncoderFeatures(MODEL, encoder, loaded.alphabet, settings),
        EncoderFeatures(RANDOM_INIT, twin, loaded.alphabet, settings),
    ]
    model_cfg = encoder.cfg
    checkpoint = {
        "path": loaded.description,
        "sha256": loaded.sha256,
        "config": model_cfg.to_dict(),
        "summary": (
            f"{model_cfg.num_layers} layers, d_model {model_cfg.d_model}, "
            f"{model_cfg.num_heads} heads, "
            f"attention {model_cfg.attention.backend} (window {model_cfg.attention.window}), "
            f"{count_parameters(encoder):,} parameters; max_length {settings.max_length}"
        ),
    }
    ctx = EvalContext(
        encoders=encoders,
        data_dir=resolve_data_dir(cfg.data_dir),
        output_dir=output,
        seed=int(cfg.seed),
        fast=str(cfg.subset) == "fast",
        show_progress=bool(cfg.progress),
        checkpoint=checkpoint,
    )
    run_settings = {
        "device": device,
        "cpu_threads": threads,
        "layer": int(cfg.layer),
        "max_length": settings.max_length,
    }
    return ctx, run_settings


def _fingerprint(ctx: EvalContext, subset: str, settings: dict, run_settings: dict) -> dict:
    return {
        "checkpoint_sha256": ctx.checkpoint["sha256"],
        "subset": subset,
        "seed": ctx.seed,
        "settings": settings,
        "run": {k: v for k, v in run_settings.items() if k not in ("device", "cpu_threads")},
    }


def _payload(ctx: EvalContext, result: ProbeResult, fingerprint: dict, seconds: float) -> dict:
    skipped: Counter = Counter()
    for entry in result.details.get("structures", {}).values():
        skipped.update(entry.get("skipped", {}))
    return {
        "probe": result.probe,
        "checkpoint": {k: ctx.checkpoint[k] for k in ("path", "sha256", "config")},
        "fingerprint": fingerprint,
        "seed": ctx.seed,
        "versions": versions(),
        "inputs": input_hashes(result.inputs),
        "rows": result.rows,
        "details": result.details,
        "figures": result.figures,
        "notes": result.notes,
        "skipped": {reason: n for reason, n in skipped.items() if n},
        "seconds": seconds,
    }


def _reusable(path: Path, fingerprint: dict) -> dict | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = json.loads(json.dumps(fingerprint, default=str)) == payload.get("fingerprint")
    return payload if same else None


def evaluate(cfg: Any) -> Path:
    """Run the selected probes and write the report; returns the report.md path."""
    from wensu.probes.report import write_report

    subset = str(cfg.subset)
    if subset not in ("full", "fast"):
        raise EvalConfigError(f"subset must be 'full' or 'fast', got {subset!r}")
    selected = [name for name in PROBE_ORDER if name in (cfg.get("probe") or {})]
    if not selected:
        raise EvalConfigError(f"probe: choose any of {list(PROBE_ORDER)} (or all)")
    output = Path(str(cfg.output)).resolve()
    output.mkdir(parents=True, exist_ok=True)
    started, run_start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    from wensu.probes.cell_context import CELL_PROBES, build_cell_context, is_cell_checkpoint_file

    if set(selected) & set(CELL_PROBES) or is_cell_checkpoint_file(str(cfg.checkpoint)):
        ctx, run_settings = build_cell_context(cfg, output, selected)
    else:
        ctx, run_settings = build_context(cfg, output)
    torch.manual_seed(ctx.seed)
    payloads, reused = [], []
    run = {
        "checkpoint": ctx.checkpoint,
        "subset": subset,
        "seed": ctx.seed,
        "device": f"{run_settings['device']} ({run_settings['cpu_threads']} CPU threads)",
        "versions": versions(),
    }
    for name in selected:
        settings = probe_settings(cfg, name, subset)
        if cfg.get("input") and "input" in settings:  # probes that read any FASTA
            settings["input"] = str(Path(str(cfg.input)).resolve())
        fingerprint = _fingerprint(ctx, subset, settings, run_settings)
        metrics_path = output / name / "metrics.json"
        payload = _reusable(metrics_path, fingerprint) if cfg.resume else None
        if payload is None:
            start = time.perf_counter()
            result = runner(name)(ctx, settings)
            payload = _payload(ctx, result, fingerprint, time.perf_counter() - start)
            write_json(metrics_path, payload)
        else:
            print(f"wensu-eval: {name}: reusing {metrics_path}", file=sys.stderr)
            reused.append(name)
        payloads.append(payload)
        write_report(output, run, payloads)
    write_json(
        output / "run.json",
        {
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": started,
            "seconds": time.perf_counter() - run_start,
            "probe_seconds": {p["probe"]: p["seconds"] for p in payloads},
            "reused": reused,
            **{k: v for k, v in run.items() if k != "checkpoint"},
            "checkpoint": {k: ctx.checkpoint[k] for k in ("path", "sha256", "summary")},
            "cpu_count": os.cpu_count(),
        },
    )
    return output / "report.md"


def _hydra_task(cfg: Any) -> None:
    from omegaconf.errors import MissingMandatoryValue

    start = time.perf_counter()
    try:
        report = evaluate(cfg)
    except MissingMandatoryValue as err:
        print(f"error: missing required option {err.full_key}=...", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"wensu-eval: report written to {report} ({time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )


def main() -> None:
    """Console script ``wensu-eval`` (Hydra app over ``conf/eval.yaml``)."""
    import hydra

    hydra.main(config_path="pkg://wensu.conf", config_name="eval", version_base="1.3")(
        _hydra_task
    )()


if __name__ == "__main__":
    main()
