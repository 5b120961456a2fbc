"""What one probe run leaves behind: the fingerprint that decides whether a finished
``metrics.json`` can be reused, and the payload written there."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from wensu.probes.common.context import EvalContext, ProbeResult, input_hashes, versions


def fingerprint(ctx: EvalContext, subset: str, settings: dict, run_settings: dict) -> dict:
    """Everything that changes a probe's numbers (device and threads do not)."""
    return {
        "checkpoint_sha256": ctx.checkpoint["sha256"],
        "subset": subset,
        "seed": ctx.seed,
        "settings": settings,
        "run": {k: v for k, v in run_settings.items() if k not in ("device", "cpu_threads")},
    }


def probe_payload(ctx: EvalContext, result: ProbeResult, fingerprint: dict, seconds: float) -> dict:
    """The ``metrics.json`` of one probe: rows, details, provenance and skipped-input counts."""
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


def _inputs_unchanged(recorded: list[dict]) -> bool:
    """Every input file a payload lists is still there with the same SHA-256 (user files are
    edited between runs under the same path)."""
    paths = [Path(entry["path"]) for entry in recorded]
    if not all(p.is_file() for p in paths):
        return False
    now = {entry["path"]: entry["sha256"] for entry in input_hashes(paths)}
    return all(now.get(entry["path"]) == entry["sha256"] for entry in recorded)


def reusable_payload(path: Path, fingerprint: dict) -> dict | None:
    """The payload at ``path`` when its fingerprint matches (resume=true) and the input files it
    read are unchanged, else None."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = json.loads(json.dumps(fingerprint, default=str)) == payload.get("fingerprint")
    return payload if same and _inputs_unchanged(payload.get("inputs", [])) else None
