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

import importlib
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from wensu.checkpoint import is_cell_checkpoint_file
from wensu.hydra_app import exit_on_user_error, run_app
from wensu.probes.cells.context import CELL_PROBES, build_cell_context
from wensu.probes.common.context import EvalContext, ProbeResult, versions, write_json
from wensu.probes.common.errors import EvalConfigError
from wensu.probes.common.protein_context import build_protein_context
from wensu.probes.common.report import write_report
from wensu.probes.common.results import fingerprint, probe_payload, reusable_payload
from wensu.probes.common.settings import PROBE_DATA, SAMPLE_NOTE, resolve_data_dir

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

# name -> "module:function"; imported only when the probe runs (some pull in heavy libraries).
RUNNERS = {
    "ss": "wensu.probes.ss.run:run_ss",
    "contacts": "wensu.probes.contacts.run:run_contacts",
    "amr": "wensu.probes.amr.run:run_amr",
    "perplexity": "wensu.probes.perplexity.run:run_perplexity",
    "variants": "wensu.probes.variants.run:run_variants",
    "interpret": "wensu.probes.interpret.run:run_interpret",
    "robustness": "wensu.probes.robustness.run:run_robustness",
    "cell_type": "wensu.probes.cells.run:run_cell_type",
}


def runner(name: str) -> Callable[[EvalContext, dict], ProbeResult]:
    """The run function of probe ``name`` (see RUNNERS)."""
    module, function = RUNNERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def probe_settings(cfg: Any, name: str, subset: str) -> dict[str, Any]:
    """A probe's settings as a plain dict, with its ``fast`` block merged for subset=fast."""
    from omegaconf import OmegaConf

    node = cfg.probe[name]
    base = OmegaConf.masked_copy(node, [k for k in node if k != "fast"])
    if subset == "fast" and "fast" in node:
        base = OmegaConf.merge(base, node.fast)
    return OmegaConf.to_container(base, resolve=True)


def evaluate(cfg: Any) -> Path:
    """Run the selected probes and write the report; returns the report.md path."""
    subset = str(cfg.subset)
    if subset not in ("full", "fast"):
        raise EvalConfigError(f"subset must be 'full' or 'fast', got {subset!r}")
    selected = [name for name in PROBE_ORDER if name in (cfg.get("probe") or {})]
    if not selected:
        raise EvalConfigError(f"probe: choose any of {list(PROBE_ORDER)} (or all)")
    output = Path(str(cfg.output)).resolve()
    output.mkdir(parents=True, exist_ok=True)
    started, run_start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    if set(selected) & set(CELL_PROBES) or is_cell_checkpoint_file(str(cfg.checkpoint)):
        ctx, run_settings = build_cell_context(cfg, output, selected)
    else:
        ctx, run_settings = build_protein_context(cfg, output)
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
        located = None
        if name in PROBE_DATA:  # this probe's built-in set: data_dir, cache, fetch or sample
            located = resolve_data_dir(
                ctx.data_option, PROBE_DATA[name], fast=ctx.fast, fetch=ctx.fetch
            )
            ctx.data_dir = located.root
        data = {"data": str(located.root) if located else None}
        probe_fingerprint = fingerprint(ctx, subset, settings, {**run_settings, **data})
        metrics_path = output / name / "metrics.json"
        payload = reusable_payload(metrics_path, probe_fingerprint) if cfg.resume else None
        if payload is None:
            start = time.perf_counter()
            result = runner(name)(ctx, settings)
            if located is not None and located.is_sample:
                result.notes.insert(0, SAMPLE_NOTE.format(name=PROBE_DATA[name]))
            payload = probe_payload(ctx, result, probe_fingerprint, time.perf_counter() - start)
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
    start = time.perf_counter()
    with exit_on_user_error():
        report = evaluate(cfg)
    print(
        f"wensu-eval: report written to {report} ({time.perf_counter() - start:.1f} s)",
        file=sys.stderr,
    )


def main() -> None:
    """Console script ``wensu-eval`` (Hydra app over ``conf/eval.yaml``)."""
    run_app(_hydra_task, "eval")


if __name__ == "__main__":
    main()
