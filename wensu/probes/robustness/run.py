"""The robustness probe (``wensu-eval probe=robustness``): how embeddings and an SS3 linear probe
trained on clean inputs move under random substitutions and X masking (1-20% of residues), N-
and C-terminal truncation (10-50%) and concatenation of 2/4/8 proteins into very long inputs,
for the model and its random-init twin. Writes one PNG of curves and ``curves.json``.

The probe is the SS3 linear head of the SS probe, trained on FLIP NetSurfP-2.0 train chains
(early-stopped on its validation chains, both without chains overlapping the test set) and
tested on NetSurfP CB513 chains; labels of perturbed inputs are those of the aligned clean
residues. Perturbations are seeded and identical for both encoders.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wensu.probes.common.context import EvalContext, ProbeResult, stable_subset, write_json
from wensu.probes.common.features import EncoderFeatures
from wensu.probes.common.overlap import overlapping_mask
from wensu.probes.robustness import plots as robustness_plots
from wensu.probes.robustness.perturb import (
    Perturbed,
    concatenate,
    concatenation_groups,
    mask_with_x,
    substitute,
    truncate,
)
from wensu.probes.robustness.probe import evaluate_perturbation
from wensu.probes.ss.data import SSRecord, read_flip_ss, read_netsurfp_csv
from wensu.probes.ss.probe import ProbeData, ProbeSettings, accuracy, predict, train_probe

SS_DIR = "structure/secondary_structure"
FLIP_ZIP = "flip_prott5/secondary_structure_splits.zip"
TEST_CSV = "netsurfp2_prottrans/CB513_HHblits.csv.gz"
KINDS = ("substitution", "x_masking", "truncation_N", "truncation_C", "concatenation")


def _data(ctx: EvalContext, cfg: dict[str, Any], result: ProbeResult) -> tuple[list, list, list]:
    root = ctx.data_dir / SS_DIR
    test = read_netsurfp_csv(root / TEST_CSV, name="CB513")
    test = stable_subset(test, cfg["test_limit"], key=lambda r: r.id)
    flip = read_flip_ss(root / FLIP_ZIP)
    result.inputs += [root / TEST_CSV, root / FLIP_ZIP]
    test_sequences = {r.sequence for r in test}
    splits = []
    for name, limit in (("train", cfg["max_train"]), ("valid", cfg["max_valid"])):
        flags, _ = overlapping_mask([r.sequence for r in flip[name]], test_sequences)
        kept = [r for r, drop in zip(flip[name], flags, strict=True) if not drop]
        splits.append(stable_subset(kept, limit, key=lambda r: r.id))
    result.details["sizes"] = {"train": len(splits[0]), "valid": len(splits[1]), "test": len(test)}
    return splits[0], splits[1], test


def perturbation_inputs(
    kind: str, level: float, sequences: list[str], seed: int
) -> list[Perturbed]:
    """The perturbed inputs of one (kind, level); seeded by (seed, kind, level) only."""
    rng = np.random.default_rng([seed, KINDS.index(kind), round(level * 1000)])
    if kind == "substitution":
        return [substitute(s, level, rng, i) for i, s in enumerate(sequences)]
    if kind == "x_masking":
        return [mask_with_x(s, level, rng, i) for i, s in enumerate(sequences)]
    if kind in ("truncation_N", "truncation_C"):
        return [truncate(s, level, kind[-1], i) for i, s in enumerate(sequences)]
    if kind == "concatenation":
        groups = concatenation_groups(len(sequences), int(level))
        return [concatenate([sequences[i] for i in g], g) for g in groups]
    raise ValueError(f"unknown perturbation {kind!r}; known: {KINDS}")


def _levels(cfg: dict[str, Any]) -> dict[str, list[float]]:
    return {
        "substitution": list(cfg["rates"]),
        "x_masking": list(cfg["rates"]),
        "truncation_N": list(cfg["truncations"]),
        "truncation_C": list(cfg["truncations"]),
        "concatenation": [float(k) for k in cfg["concatenations"]],
    }


def _encoder_curves(
    features: EncoderFeatures, cfg: dict[str, Any], data: tuple, seed: int
) -> tuple[dict[str, list[dict]], float]:
    train, valid, test = data
    settings = ProbeSettings(**{**cfg["training"], "seed": seed})

    def featurize(records: list[SSRecord], desc: str) -> ProbeData:
        return ProbeData(
            features.per_residue([r.sequence for r in records], desc),
            [r.labels(3) for r in records],
        )

    probe = train_probe(
        "linear", featurize(train, "SS3 train"), featurize(valid, "SS3 valid"), 3, settings
    )
    clean = featurize(test, "robustness clean")
    clean_predictions = predict(probe, clean, settings.batch_residues)
    clean_accuracy = accuracy(clean_predictions, clean.labels)
    sequences = [r.sequence for r in test]
    curves: dict[str, list[dict]] = {}
    for kind, levels in _levels(cfg).items():
        for level in levels:
            inputs = perturbation_inputs(kind, level, sequences, seed)
            if not inputs:
                continue
            point = evaluate_perturbation(
                lambda seqs, kind=kind: features.per_residue(seqs, f"robustness {kind}"),
                clean.features,
                inputs,
                probe,
                clean_predictions,
                clean.labels,
            )
            curves.setdefault(kind, []).append({"level": level, "inputs": len(inputs), **point})
    return curves, clean_accuracy


def _long_input_policy(features: EncoderFeatures) -> str:
    context = features.settings.max_length
    if features.window is not None:
        return (
            f"inputs longer than {context} residues run whole through the chunked backend of the "
            f"model's windowed attention (window {features.window})"
        )
    return (
        f"dense model: inputs longer than its context ({context} residues) are embedded as "
        f"wensu-embed does, in overlapping windows of {context} residues (stride "
        f"{max(1, context // 2)}) averaged per residue"
    )


def run_robustness(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Perturbation curves (embedding cosine, SS3 probe accuracy) for model and random-init."""
    result = ProbeResult("robustness")
    data = _data(ctx, cfg, result)
    by_model, clean_accuracy = {}, {}
    for features in ctx.encoders:
        by_model[features.name], clean_accuracy[features.name] = _encoder_curves(
            features, cfg, data, ctx.seed
        )
    policy = _long_input_policy(ctx.encoders[0])
    payload = {
        "clean_ss3_accuracy": clean_accuracy,
        "curves": by_model,
        "long_input_policy": policy,
        "sizes": result.details["sizes"],
        "seed": ctx.seed,
    }
    result.details.update({k: v for k, v in payload.items() if k != "sizes"})
    folder = ctx.output_dir / "robustness"
    write_json(folder / "curves.json", payload)
    result.figures.append(robustness_plots.curves_png(folder / "curves.png", by_model))
    result.add_row("SS3 CB513 (clean)", "Q3", clean_accuracy)
    names = list(by_model)
    for kind in KINDS:
        for i, point in enumerate(by_model[names[0]].get(kind, [])):
            label = f"{kind} {point['level']:g}"
            cosine = "mean_cosine" if "mean_cosine" in point else "residue_cosine"
            for metric in (cosine, f"{cosine}_centred", "drop"):
                values = {n: by_model[n][kind][i][metric] for n in names}
                result.add_row(f"robustness {label}", metric, values)
    result.notes.append(
        "Robustness: substitutions (a different standard residue) and X masking at the given "
        "share of residues, terminal truncation by share of length, concatenation of k CB513 "
        "chains (consecutive groups, no linker); seeded, same inputs for both encoders. "
        "mean_cosine: mean-embedding cosine to the clean protein; residue_cosine: per-residue "
        "cosine over the overlapping residues; _centred: the same after subtracting the clean "
        "test set's average vector (raw cosines stay near 1 through a shared component); "
        "drop: SS3 linear-probe (trained on clean FLIP chains) accuracy on the same residues, "
        "clean minus perturbed. Long inputs: "
        f"{policy}. Layer {ctx.encoders[0].layer}."
    )
    return result
