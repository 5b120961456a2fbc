"""Zero-shot scoring of user DMS assays in ProteinGym format (``probe.variants.sets`` paths).

Substitution assays are scored with the configured method (masked marginal by default, as for
the built-in sets) plus BLOSUM62; indel assays (a ``mutated_sequence`` of another length) by
the pseudo-log-likelihood difference ``PLL(mutated) - PLL(wild type)``. Metrics are ProteinGym's
(:mod:`wensu.probes.variants.proteingym_metrics`), averaged over assays, and also written as
ProteinGym's per-assay CSVs with the model column named after the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wensu.alphabet import Alphabet
from wensu.model import Encoder
from wensu.probes.common.context import ProbeResult
from wensu.probes.common.inputs import UserSet
from wensu.probes.variants.plots import spearman_bars_png
from wensu.probes.variants.probe import ResidueLogProbs, score_variants
from wensu.probes.variants.proteingym import DmsAssay, load_assays
from wensu.probes.variants.proteingym_metrics import (
    PROTEINGYM_METRICS,
    assay_metrics,
    write_summary_csvs,
)

SUMMARY_FOLDER = "proteingym"


def checkpoint_column(path: str | Path) -> str:
    """A model column name from a checkpoint path: its stem, with the run folder for generic
    names (``runs/x/checkpoints/last.ckpt`` -> ``x/last``)."""
    path = Path(str(path))
    stem = path.name.removesuffix(".ckpt").removesuffix(".pt") if path.suffix else path.name
    generic = stem in ("last", "best") or stem.startswith("epoch=")
    if generic and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{stem}"
    return stem


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def pll_differences(
    model: Encoder, alphabet: Alphabet, wild_type: str, sequences: Sequence[str], **options: Any
) -> np.ndarray:
    """``PLL(sequence) - PLL(wild type)`` for each sequence (any length): indel scoring."""
    scorer = ResidueLogProbs(model, alphabet, **options)
    reference = scorer.pseudo_log_likelihood(wild_type)
    return np.array(
        [scorer.pseudo_log_likelihood(s) - reference for s in sequences], dtype=np.float64
    )


def _predictions(
    assay: DmsAssay,
    encoders: Mapping[str, Encoder],
    alphabet: Alphabet,
    method: str,
    blosum,
    options: dict[str, Any],
) -> dict[str, np.ndarray]:
    if assay.indel:
        return {
            name: pll_differences(encoder, alphabet, assay.wild_type, assay.sequences, **options)
            for name, encoder in encoders.items()
        }
    scores = {
        name: score_variants(
            encoder,
            alphabet,
            assay.wild_type,
            assay.parsed,
            method=method,
            source=f"assay {assay.name} ({assay.path})",
            **options,
        )
        for name, encoder in encoders.items()
    }
    scores["BLOSUM62"] = blosum(assay.parsed)
    return scores


def evaluate_user_assays(
    encoders: Mapping[str, Encoder],
    alphabet: Alphabet,
    user_sets: Sequence[UserSet],
    settings: Mapping[str, Any],
    *,
    model_column: str,
    blosum,
    scorer_options: dict[str, Any],
    output_dir: Path,
    figure_prefix: str = "",
) -> ProbeResult:
    """Score every assay of ``user_sets`` with every encoder (the first is the checkpoint, shown
    as ``model_column`` in the ProteinGym CSVs); rows, details, summary CSVs and a figure."""
    assays, references = load_assays(user_sets, settings.get("reference"), settings["max_variants"])
    per_assay: dict[str, dict[str, dict[str, float]]] = {}
    columns: list[str] = []
    for assay in assays:
        scores = _predictions(assay, encoders, alphabet, settings["method"], blosum, scorer_options)
        per_assay[assay.name] = {
            c: assay_metrics(assay.scores, s, assay.bins) for c, s in scores.items()
        }
        columns += [c for c in scores if c not in columns]
    for by_column in per_assay.values():  # indel assays have no BLOSUM62 column
        for column in columns:
            by_column.setdefault(column, dict.fromkeys(PROTEINGYM_METRICS, float("nan")))
    first = next(iter(encoders))
    csv_names = {c: (model_column if c == first else c) for c in columns}
    renamed = {a: {csv_names[c]: m for c, m in by.items()} for a, by in per_assay.items()}
    extra = {
        a.name: {
            "number_mutants": len(a),
            "UniProt_ID": a.reference.get("UniProt_ID", ""),
            "mutation_type": "indels" if a.indel else "substitutions",
            "wild_type_from": a.wild_type_source,
        }
        for a in assays
    }
    summary_dir = output_dir / SUMMARY_FOLDER
    written = write_summary_csvs(summary_dir, renamed, list(csv_names.values()), extra, kind="user")
    means = {
        c: {m: _mean([by[c][m] for by in per_assay.values()]) for m in PROTEINGYM_METRICS}
        for c in columns
    }
    result = ProbeResult("variants")
    result.inputs += references + [a.path for a in assays]
    for assay in assays:
        values = {c: per_assay[assay.name][c]["Spearman"] for c in columns}
        result.add_row(f"{assay.name} (n={len(assay)})", "Spearman (ProteinGym)", values)
    for metric in PROTEINGYM_METRICS:
        label = f"mean over {len(assays)} user assays"
        result.add_row(label, f"{metric} (ProteinGym)", {c: means[c][metric] for c in columns})
    result.details["user_assays"] = {
        "assays": {
            a.name: {
                "file": str(a.path),
                "variants": len(a),
                "indel": a.indel,
                "wild_type_from": a.wild_type_source,
                "has_DMS_score_bin": a.bins is not None,
                "metrics": per_assay[a.name],
            }
            for a in assays
        },
        "mean": means,
        "columns": columns,
        "model_column": model_column,
        "summary_csvs": [str(p) for p in written],
        "references": [str(p) for p in references],
    }
    bars = {
        a: {c: {"spearman": m["Spearman"]} for c, m in by.items()} for a, by in per_assay.items()
    }
    figure = spearman_bars_png(output_dir / "user_assays_spearman.png", bars, columns)
    result.figures.append(figure_prefix + figure)
    indels = [a.name for a in assays if a.indel]
    no_bins = [a.name for a in assays if a.bins is None]
    result.notes.append(
        f"User assays (ProteinGym format): {len(assays)}; metrics as ProteinGym computes them "
        "(Spearman; AUC and MCC on DMS_score_bin, MCC with predictions cut at their median; "
        "NDCG and recall of the top 10%); per-assay CSVs in "
        f"{SUMMARY_FOLDER}/ with the checkpoint as column {model_column!r}. Indel assays "
        f"(PLL(mutated) - PLL(wild type)): {', '.join(indels) or 'none'}. Without "
        f"DMS_score_bin (AUC/MCC empty): {', '.join(no_bins) or 'none'}."
    )
    return result
