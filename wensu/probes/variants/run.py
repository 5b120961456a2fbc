"""Zero-shot variant-effect evaluation on the DMS sets of ``variants/sets.csv``.

Each encoder scores every variant (:func:`wensu.probes.variants.probe.score_variants`); the scores
are compared with the measured fitness per set (Spearman, NDCG@10%, top-10% recall) and
averaged per protein first, then over proteins, so the four TEM-1 sets count as one protein.
Baselines share the table: BLOSUM62(wt -> mut) and a random-init encoder of the same shape,
plus any reference model given (e.g. an ESM-2 checkpoint).

Entry points: :func:`run_variants_probe` (library / benchmark script: writes ``metrics.json``
and PNGs, returns the metrics and a markdown table) and :func:`run_variants` (the
``wensu-eval`` runner signature: ``(EvalContext, settings) -> ProbeResult``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wensu.alphabet import Alphabet
from wensu.checkpoint import load
from wensu.model import Encoder, count_parameters
from wensu.probes.common.baselines import random_init_like
from wensu.probes.common.context import (
    MODEL,
    RANDOM_INIT,
    EvalContext,
    ProbeResult,
    input_hashes,
    versions,
    write_json,
)
from wensu.probes.common.inputs import UserSet, resolve_entries
from wensu.probes.variants.data import (
    INDEX_NAME,
    Mutant,
    VariantDataError,
    VariantSet,
    load_variant_sets,
    read_index,
    read_variant_set,
    variants_dir,
)
from wensu.probes.variants.metrics import METRICS, protein_means, set_metrics
from wensu.probes.variants.plots import heatmap_png, scatter_png, spearman_bars_png
from wensu.probes.variants.probe import DEFAULT_CONTEXT, METHODS, score_landscape, score_variants
from wensu.probes.variants.proteingym import DMS_SUFFIXES
from wensu.probes.variants.user_sets import checkpoint_column, evaluate_user_assays

PROBE = "variants"
BLOSUM = "BLOSUM62"
METRIC_LABELS = {"spearman": "Spearman", "ndcg": "NDCG@10%", "top_recall": "top-10% recall"}


@cache
def _blosum62() -> Any:
    from Bio.Align import substitution_matrices

    return substitution_matrices.load(BLOSUM)


def blosum62_scores(mutants: Sequence[Mutant]) -> np.ndarray:
    """BLOSUM62(wt, mut) summed over each mutant's substitutions (higher = more conservative)."""
    matrix = _blosum62()
    return np.array(
        [sum(float(matrix[s.wild_type][s.mutant]) for s in mutant) for mutant in mutants],
        dtype=np.float64,
    )


def default_settings(subset: str = "full") -> dict[str, Any]:
    """``conf/probe/variants.yaml`` as a plain dict, with its ``fast`` block merged for fast."""
    from omegaconf import OmegaConf

    if subset not in ("full", "fast"):
        raise ValueError(f"subset must be 'full' or 'fast', got {subset!r}")
    node = OmegaConf.load(str(files("wensu.conf") / "probe" / "variants.yaml"))
    settings = OmegaConf.to_container(node, resolve=True)
    fast = settings.pop("fast", None) or {}
    return {**settings, **fast} if subset == "fast" else settings


def _long_context(value: Any) -> bool | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise ValueError(f"long_context must be auto, true or false, got {value!r}")


def _check(settings: Mapping[str, Any]) -> None:
    if settings["method"] not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {settings['method']!r}")
    _long_context(settings["long_context"])
    if settings["window"] is not None and int(settings["window"]) < 1:
        raise ValueError(f"window must be a positive number of residues, got {settings['window']}")


def _scorer_options(settings: Mapping[str, Any], device, show_progress: bool) -> dict[str, Any]:
    return dict(
        window=DEFAULT_CONTEXT if settings["window"] is None else int(settings["window"]),
        long_context=_long_context(settings["long_context"]),
        batch_tokens=int(settings["batch_tokens"]),
        device=device,
        show_progress=show_progress,
    )


def evaluate_variants(
    encoders: Mapping[str, Encoder],
    alphabet: Alphabet,
    data_dir: str | Path,
    settings: Mapping[str, Any],
    *,
    figure_dir: Path,
    figure_prefix: str = "",
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> ProbeResult:
    """Score the sets with every encoder (the first is "the model") plus BLOSUM62 and collect
    metrics, table rows, notes and figures (written to ``figure_dir``)."""
    _check(settings)
    folder = variants_dir(data_dir)
    variant_sets = load_variant_sets(folder, settings["sets"], settings["max_variants"])
    scorer_options = _scorer_options(settings, device, show_progress)
    window = scorer_options["window"]
    columns = [*encoders, BLOSUM]
    per_set: dict[str, dict[str, Any]] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for variant_set in variant_sets:
        info = variant_set.info
        scores = {
            name: score_variants(
                encoder,
                alphabet,
                info.sequence,
                variant_set.mutants,
                method=settings["method"],
                offset=info.offset,
                source=f"set {info.name}",
                **scorer_options,
            )
            for name, encoder in encoders.items()
        }
        scores[BLOSUM] = blosum62_scores(variant_set.mutants)
        predictions[info.name] = scores
        per_set[info.name] = {
            "protein": info.protein,
            "description": info.description,
            "group": info.group,
            "reference": info.reference,
            "sequence_length": len(info.sequence),
            "variants": len(variant_set),
            "variants_in_file": info.n_variants,
            "metrics": {c: set_metrics(variant_set.scores, scores[c]) for c in columns},
        }
    proteins, summary = protein_means(
        {name: entry["metrics"] for name, entry in per_set.items()},
        {name: entry["protein"] for name, entry in per_set.items()},
    )

    result = ProbeResult(PROBE)
    result.inputs += [folder / INDEX_NAME] + [vs.info.path for vs in variant_sets]
    for name, entry in per_set.items():
        values = {c: entry["metrics"][c]["spearman"] for c in columns}
        result.add_row(f"{name} (n={entry['variants']})", "Spearman", values)
    label = f"mean over {len(proteins)} proteins"
    for metric in METRICS:
        result.add_row(label, METRIC_LABELS[metric], {c: summary[c][metric] for c in columns})
    result.details.update(
        method=settings["method"],
        settings=dict(settings),
        sets=per_set,
        proteins=proteins,
        summary=summary,
        columns=columns,
    )
    model_name = next(iter(encoders))
    result.figures.append(
        figure_prefix
        + spearman_bars_png(
            figure_dir / "variants_spearman.png",
            {name: entry["metrics"] for name, entry in per_set.items()},
            columns,
        )
    )
    heatmap = _heatmap_set(variant_sets, settings["heatmap_set"])
    if heatmap is not None:
        measured = read_variant_set(heatmap.info)
        spearmans = {c: per_set[heatmap.name]["metrics"][c]["spearman"] for c in columns}
        result.figures.append(
            figure_prefix
            + scatter_png(
                figure_dir / f"variants_scatter_{heatmap.name}.png",
                heatmap.name,
                heatmap.scores,
                predictions[heatmap.name],
                spearmans,
            )
        )
        positions = sorted({s.position for m in measured.mutants for s in m})
        landscape_method = (
            "wt_marginal" if settings["method"] == "wt_marginal" else "masked_marginal"
        )
        predicted = score_landscape(
            encoders[model_name],
            alphabet,
            heatmap.info.sequence,
            positions,
            method=landscape_method,
            offset=heatmap.info.offset,
            **scorer_options,
        )
        result.figures.append(
            figure_prefix
            + heatmap_png(
                figure_dir / f"variants_heatmap_{heatmap.name}.png",
                measured,
                positions,
                predicted,
                f"{model_name} ({landscape_method.replace('_', '-')})",
            )
        )
    result.notes += _notes(variant_sets, settings, encoders[model_name], window, proteins)
    return result


def _heatmap_set(variant_sets: list[VariantSet], wanted: str | None) -> VariantSet | None:
    by_name = {vs.name: vs for vs in variant_sets}
    if wanted in by_name:
        return by_name[wanted]
    tem1 = [vs for vs in variant_sets if vs.info.protein == "BLAT_ECOLX"]
    return tem1[0] if tem1 else None


def _notes(
    variant_sets: list[VariantSet],
    settings: Mapping[str, Any],
    model: Encoder,
    window: int,
    proteins: Mapping[str, Any],
) -> list[str]:
    method = settings["method"]
    described = {
        "masked_marginal": "ESM-1v masked marginal: log p(mut) - log p(wt) with the position "
        "masked in the wild type (multi-substitutions: sum over positions, each masked alone)",
        "wt_marginal": "wild-type marginal: log p(mut) - log p(wt) from an unmasked pass",
        "pll": "pseudo-log-likelihood difference PLL(mutant) - PLL(wild type)",
    }[method]
    long = [vs for vs in variant_sets if len(vs.info.sequence) > window]
    long_context = _long_context(settings["long_context"])
    attention_window = model.cfg.attention.window
    if long_context is None:
        long_context = attention_window is not None
    if long_context:
        how = f"whole sequence in one pass (model attention window {attention_window})"
    else:
        how = f"{window}-residue windows centred on each scored position (ESM-1v/ProteinGym)"
    cap = settings["max_variants"]
    sample = f"at most {cap} variants per set (fixed CRC32 sample)" if cap else "all variants"
    long_names = ", ".join(f"{vs.name} {len(vs.info.sequence)} aa" for vs in long)
    notes = [
        f"Variants: {described}; higher = predicted fitter. Measured scores are ProteinGym "
        "DMS_score (higher = fitter).",
        "Sequences: the full wild-type protein from sets.csv for every set (also where only a "
        f"domain was mutated); proteins longer than {window} residues "
        f"({long_names or 'none here'}): {how}.",
        f"Means: per protein first (sets of the same UniProt entry averaged, e.g. the 4 TEM-1 "
        f"sets), then over {len(proteins)} proteins. NDCG@10% uses min-max scaled measured scores "
        "as gains (ProteinGym); NDCG and top-10% recall count tied predictions at their expected "
        "value under random tie-breaking (BLOSUM62 has many ties).",
        f"Subset: {sample}.",
    ]
    return notes


def _split_sets(
    entries: Sequence[str] | None, data_dir: Path
) -> tuple[list[str] | None, list[UserSet]]:
    """Built-in set names (None: all of sets.csv) and user ProteinGym-format sets."""
    if entries is None:
        return None, []
    try:
        known = {info.name for info in read_index(data_dir)}
    except VariantDataError:
        known = set()  # no built-in sets here: every entry must be a path
    resolved = resolve_entries(entries, known, DMS_SUFFIXES, where="probe.variants.sets")
    return [i for i in resolved if isinstance(i, str)], [
        i for i in resolved if not isinstance(i, str)
    ]


def _merged(results: list[ProbeResult]) -> ProbeResult:
    """One result from the built-in and the user-assay parts."""
    merged, *rest = results
    for other in rest:
        merged.rows += other.rows
        merged.details.update(other.details)
        merged.inputs += other.inputs
        merged.figures += other.figures
        merged.notes += other.notes
    return merged


def run_variants(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """``wensu-eval`` runner: the checkpoint and its random-init twin (plus ``esm2``, if set)."""
    settings = {**default_settings("fast" if ctx.fast else "full"), **cfg}
    if settings.get("window") is None:
        settings["window"] = ctx.encoders[0].settings.max_length
    encoders = {features.name: features.encoder for features in ctx.encoders}
    if settings.get("esm2"):
        path = Path(settings["esm2"])
        encoders[f"ESM-2 ({path.name})"] = load(path)[0]
    builtin, user_sets = _split_sets(settings["sets"], ctx.data_dir)
    device, figure_dir = str(ctx.encoders[0].device), ctx.output_dir / PROBE
    results = []
    if builtin is None or builtin:
        results.append(
            evaluate_variants(
                encoders,
                ctx.encoders[0].alphabet,
                ctx.data_dir,
                settings if not user_sets else {**settings, "sets": builtin},
                figure_dir=figure_dir,
                figure_prefix=f"{PROBE}/",
                device=device,
                show_progress=ctx.show_progress,
            )
        )
    if user_sets:
        _check(settings)
        results.append(
            evaluate_user_assays(
                encoders,
                ctx.encoders[0].alphabet,
                user_sets,
                settings,
                model_column=settings.get("model_name")
                or checkpoint_column(ctx.checkpoint.get("path", MODEL)),
                blosum=blosum62_scores,
                scorer_options=_scorer_options(settings, device, ctx.show_progress),
                output_dir=figure_dir,
                figure_prefix=f"{PROBE}/",
            )
        )
    result = _merged(results)
    if settings.get("esm2"):
        result.inputs.append(Path(settings["esm2"]))
    return result


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of :class:`ProbeResult` as a markdown table (one column per scorer)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row["values"] if c not in columns]
    lines = [
        "| set | metric | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [
            "–" if v is None or np.isnan(v) else f"{v:.3f}"
            for v in (row["values"].get(c) for c in columns)
        ]
        lines.append(f"| {row['task']} | {row['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_variants_probe(
    model: Encoder,
    alphabet: Alphabet,
    *,
    data_dir: str | Path,
    output_dir: str | Path,
    sets: Sequence[str] | None = None,
    subset: str = "full",
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    reference_models: Mapping[str, Encoder] | None = None,
    device: str | torch.device | None = None,
    show_progress: bool = False,
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` (plus a random-init twin seeded with ``seed``, BLOSUM62 and any
    ``reference_models``) on the DMS sets; write ``metrics.json`` and PNGs to ``output_dir``.

    ``data_dir`` is the data directory or its ``variants/`` folder; ``sets`` limits the sets;
    ``subset="fast"`` caps each set at 200 variants; ``settings`` overrides keys of
    ``conf/probe/variants.yaml`` (method, max_variants, window, long_context, batch_tokens,
    heatmap_set). Returns the metrics (as written) plus ``table_markdown``.
    """
    start = time.perf_counter()
    chosen = {**default_settings(subset), **dict(settings or {})}
    if sets is not None:
        chosen["sets"] = list(sets)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    encoders = {MODEL: model, RANDOM_INIT: random_init_like(model, seed=seed)}
    encoders.update(reference_models or {})
    result = evaluate_variants(
        encoders,
        alphabet,
        data_dir,
        chosen,
        figure_dir=output_dir,
        device=device,
        show_progress=show_progress,
    )
    payload = {
        "probe": PROBE,
        "subset": subset,
        "seed": seed,
        "model": {"config": model.cfg.to_dict(), "parameters": count_parameters(model)},
        "reference_models": {
            name: {"config": m.cfg.to_dict(), "parameters": count_parameters(m)}
            for name, m in (reference_models or {}).items()
        },
        **result.details,
        "rows": result.rows,
        "figures": result.figures,
        "notes": result.notes,
        "inputs": input_hashes(result.inputs),
        "versions": versions(),
        "run": dict(run_info or {}),
        "seconds": time.perf_counter() - start,
    }
    write_json(output_dir / "metrics.json", payload)
    return {**payload, "table_markdown": markdown_table(result.rows)}
