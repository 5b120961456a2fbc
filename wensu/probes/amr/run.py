"""The AMR probe: drug class (macro-F1, per-class F1, confusion matrix) and AMR vs.
virulence/stress, from mean embeddings and composition baselines, family-grouped CV."""

from __future__ import annotations

from typing import Any

import numpy as np

from wensu.probes.amr.probe import (
    binary_metrics,
    binary_task,
    classification_metrics,
    drug_class_task,
    family_folds_disjoint,
    grouped_predictions,
    read_amr_tsv,
)
from wensu.probes.common import report
from wensu.probes.common.baselines import composition_features
from wensu.probes.common.context import EvalContext, ProbeResult

AMR_TSV = "amr/amrfinderplus_2024-07-22.1_proteins_labelled.tsv"
COMPOSITIONS = {"AA composition": (1,), "3-mer composition": (3,)}


def _feature_sets(ctx: EvalContext, sequences: list[str], desc: str) -> dict[str, np.ndarray]:
    sets = {e.name: e.mean(sequences, desc) for e in ctx.encoders}
    for name, ks in COMPOSITIONS.items():
        sets[name] = composition_features(sequences, ks)
    return sets


def run_amr(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Drug-class and AMR-vs-other probes for the model, random-init twin and compositions."""
    result = ProbeResult("amr")
    path = ctx.data_dir / AMR_TSV
    result.inputs.append(path)
    proteins, quarantined = read_amr_tsv(path)
    result.details["quarantined"] = dict(quarantined)
    if cfg["max_protein_length"]:
        kept = [p for p in proteins if len(p.sequence) <= cfg["max_protein_length"]]
        result.details["excluded_longer_than_max_protein_length"] = len(proteins) - len(kept)
        proteins = kept
    folds, seed = cfg["folds"], ctx.seed

    chosen, classes = drug_class_task(proteins, cfg["min_members"], cfg["max_per_class"])
    y = np.array([classes.index(p.drug_class) for p in chosen])
    groups = [p.family for p in chosen]
    result.details["drug_class"] = {
        "classes": classes,
        "proteins": len(chosen),
        "families": len(set(groups)),
        "families_per_class": {
            c: len({p.family for p in chosen if p.drug_class == c}) for c in classes
        },
        "family_disjoint_folds": family_folds_disjoint(y, groups, folds, seed),
        "by_features": {},
    }
    features = _feature_sets(ctx, [p.sequence for p in chosen], "AMR drug class")
    for name, x in features.items():
        predicted, _ = grouped_predictions(x, y, groups, folds=folds, seed=seed, c=cfg["C"])
        metrics = classification_metrics(y, predicted, classes)
        result.details["drug_class"]["by_features"][name] = metrics
        safe = name.replace(" ", "_")
        result.figures.append(
            report.confusion_png(
                ctx.output_dir / "amr" / f"confusion_{safe}.png",
                metrics["confusion"],
                classes,
                f"AMR drug class, {name} (macro-F1 {metrics['macro_f1']:.3f})",
            )
        )
    by_features = result.details["drug_class"]["by_features"]
    for metric in ("macro_f1", "accuracy"):
        result.add_row("AMR drug class", metric, {n: m[metric] for n, m in by_features.items()})
    for cls in classes:
        result.add_row(
            "AMR drug class",
            f"F1 {cls}",
            {n: m["per_class_f1"][cls] for n, m in by_features.items()},
        )

    pairs = binary_task(proteins, cfg["max_per_side"])
    yb = np.array([1 if p.type == "AMR" else 0 for p in pairs])
    groups_b = [p.family for p in pairs]
    result.details["binary"] = {
        "amr": int(yb.sum()),
        "virulence_or_stress": int((yb == 0).sum()),
        "by_features": {},
    }
    for name, x in _feature_sets(ctx, [p.sequence for p in pairs], "AMR vs other").items():
        predicted, probabilities = grouped_predictions(
            x, yb, groups_b, folds=folds, seed=seed, c=cfg["C"]
        )
        result.details["binary"]["by_features"][name] = binary_metrics(
            yb, predicted, probabilities[:, 1]
        )
    for metric in ("f1", "auroc"):
        values = {n: m[metric] for n, m in result.details["binary"]["by_features"].items()}
        result.add_row("AMR vs virulence/stress", metric, values)
    result.notes.append(
        f"AMR: {folds}-fold cross-validation grouped by family (parent_node; no family on both "
        "sides of a fold), class-balanced logistic regression on standardised mean embeddings "
        f"of layer {ctx.encoders[0].layer}; drug classes with >= {cfg['min_members']} proteins; "
        f"quarantined rows: {dict(quarantined) or 'none'}."
    )
    return result
