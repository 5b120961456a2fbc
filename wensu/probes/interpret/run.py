"""The interpretability probe (``wensu-eval probe=interpret [input=proteins.fasta]``):

(a) per layer and head, the long-range P@L of the head's APC-corrected attention map on the
    contact probe's structures (heatmaps for the model and its random-init twin) and a grid of
    the best heads' maps for a few input proteins;
(b) logit lens: per-layer entropy and residue accuracy (unmasked and masked), per-position
    entropy along one protein;
(c) 2-D maps of mean embeddings coloured by each label the proteins carry (organism from
    ``OS=``, drug class for the default AMR set, or a label TSV), with silhouette and kNN accuracy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wensu.probes.common.context import EvalContext, ProbeResult, stable_subset
from wensu.probes.common.features import EncoderFeatures
from wensu.probes.common.structures import ChainStructure, contact_map
from wensu.probes.contacts.data import load_contact_set
from wensu.probes.interpret import plots
from wensu.probes.interpret.attention_heads import best_heads, head_maps, head_precisions
from wensu.probes.interpret.data import (
    DRUG_CLASS,
    LabelledProtein,
    default_proteins,
    read_proteins,
)
from wensu.probes.interpret.embedding_map import (
    knn_accuracy,
    label_silhouette,
    project_2d,
    projection_method,
)
from wensu.probes.interpret.logit_lens import logit_lens
from wensu.progress import progress_bar

STRUCTURE_DIR = "structure"
FOLDER = "interpret"


def _proteins(ctx: EvalContext, cfg: dict[str, Any], result: ProbeResult) -> list[LabelledProtein]:
    if cfg["input"]:
        path = Path(cfg["input"])
        label_tsv = Path(cfg["label_tsv"]) if cfg.get("label_tsv") else None
        proteins = read_proteins(path, label_tsv, cfg.get("label_name") or "label")
        result.inputs += [path, *([label_tsv] if label_tsv else [])]
        kept = {p.id for p in stable_subset(proteins, cfg["max_proteins"], key=lambda p: p.id)}
        result.details["input"] = {
            "path": str(path),
            "records": len(proteins),
            "proteins": len(kept),
        }
        return [p for p in proteins if p.id in kept]  # file order: the first ones are drawn
    d = cfg["default_set"]
    proteins, files = default_proteins(
        ctx.data_dir,
        amr_per_class=d["amr_per_class"],
        amr_min_members=d["amr_min_members"],
        proteomes=list(d["proteomes"]),
        per_proteome=d["per_proteome"],
        max_length=d["max_protein_length"],
    )
    result.inputs += files
    result.details["input"] = {"default_set": d, "proteins": len(proteins)}
    return proteins


def _structures(ctx: EvalContext, cfg: dict[str, Any], context: int, result) -> list:
    kept: list[ChainStructure] = []
    skipped: Counter = Counter()
    for name in cfg["structure_sets"]:
        loaded = load_contact_set(
            name,
            ctx.data_dir / STRUCTURE_DIR,
            limit=cfg["structure_limit"],
            select=cfg["structure_select"],
            show_progress=ctx.show_progress,
        )
        result.inputs += loaded.files
        skipped.update(loaded.skipped)
        for s in loaded.structures:
            if len(s.sequence) > context:
                skipped["longer_than_model_context"] += 1
            elif s.n_observed < 2:
                skipped["no_coordinates"] += 1
            else:
                kept.append(s)
    result.details["structures"] = {
        "attention_heads": {"evaluated": len(kept), "skipped": dict(skipped)}
    }
    return kept


def _head_quality(ctx, cfg, proteins, context, result: ProbeResult) -> None:
    structures = _structures(ctx, cfg, context, result)
    if not structures:
        result.notes.append("Attention heads: no usable structure, per-head P@L not computed.")
        return
    maps = {s.name: contact_map(s.coords, cfg["cutoff"]) for s in structures}
    precisions: dict[str, np.ndarray] = {}
    for features in ctx.encoders:
        per_structure = [
            head_precisions(features.attention(s.sequence), *maps[s.name])
            for s in progress_bar(
                structures, desc=f"head P@L [{features.name}]", enabled=ctx.show_progress
            )
        ]
        precisions[features.name] = np.mean(per_structure, axis=0)
    result.details["head_long_range_P@L"] = {k: v.tolist() for k, v in precisions.items()}
    for stat, fn in (("best head", np.max), ("mean over heads", np.mean)):
        result.add_row(
            "attention heads", f"long P@L, {stat}", {k: float(fn(v)) for k, v in precisions.items()}
        )
    folder = ctx.output_dir / FOLDER
    result.figures.append(
        plots.head_heatmap_png(
            folder / "head_contact_precision.png",
            precisions,
            f"long-range P@L of each head's APC attention map ({len(structures)} structures)",
        )
    )
    model = ctx.encoders[0]
    top = best_heads(precisions[model.name], cfg["best_heads"])
    result.details["best_heads"] = [
        {"layer": layer + 1, "head": head + 1, "P@L": float(precisions[model.name][layer, head])}
        for layer, head in top
    ]
    examples = proteins[: cfg["attention_examples"]]
    if examples:
        grids = [head_maps(model.attention(p.sequence[:context]), top) for p in examples]
        result.figures.append(
            plots.attention_grid_png(
                folder / "best_head_attention.png",
                [p.id for p in examples],
                top,
                grids,
                [float(precisions[model.name][h]) for h in top],
            )
        )


def _logit_lens(ctx, cfg, proteins, context, result: ProbeResult) -> None:
    chosen = stable_subset(proteins, cfg["lens_sequences"], key=lambda p: p.id)
    sequences = [p.sequence[:context] for p in chosen]
    summaries, profiles = {}, {}
    for features in ctx.encoders:
        summary, profile = logit_lens(
            features.encoder,
            features.alphabet,
            sequences,
            mask_rate=cfg["mask_rate"],
            seed=ctx.seed,
            max_tokens=features.settings.max_tokens,
            profile_count=1,
            device=features.device,
        )
        summaries[features.name] = summary
        profiles[features.name] = profile[0]
    result.details["logit_lens"] = {
        "proteins": len(sequences),
        "residues": int(sum(len(s) for s in sequences)),
        "by_model": summaries,
    }
    names = list(summaries)
    for metric in ("entropy", "accuracy_unmasked", "accuracy_masked"):
        for layer in range(len(summaries[names[0]][metric])):
            result.add_row(
                "logit lens",
                f"{metric} layer {layer}",
                {n: summaries[n][metric][layer] for n in names},
            )
    folder = ctx.output_dir / FOLDER
    result.figures.append(plots.lens_curves_png(folder / "logit_lens_layers.png", summaries))
    result.figures.append(
        plots.entropy_profile_png(folder / "logit_lens_entropy_profile.png", chosen[0].id, profiles)
    )


def _embedding_maps(ctx, cfg, proteins, result: ProbeResult) -> None:
    method = projection_method(cfg["projection"])
    kinds = sorted({kind for p in proteins for kind, _ in p.labels if kind != "family"})
    maps: dict[str, Any] = {}
    for kind in kinds:
        labelled = [p for p in proteins if p.label(kind)]
        labels = [p.label(kind) for p in labelled]
        if len(set(labels)) < 2:
            result.notes.append(f"Embedding map by {kind}: fewer than 2 labels, not drawn.")
            continue
        groups = [p.label("family") or p.id for p in labelled] if kind == DRUG_CLASS else None
        coords, scores = {}, {}
        for features in ctx.encoders:
            x = _mean(features, [p.sequence for p in labelled])
            coords[features.name] = project_2d(x, method, ctx.seed)
            scores[features.name] = {
                "silhouette": label_silhouette(x, labels),
                "knn_accuracy": knn_accuracy(x, labels, cfg["knn_k"], groups),
            }
        maps[kind] = {"proteins": len(labelled), "labels": dict(Counter(labels)), "scores": scores}
        for metric in ("silhouette", "knn_accuracy"):
            result.add_row(
                f"embedding map by {kind}", metric, {m: s[metric] for m, s in scores.items()}
            )
        safe = kind.replace(" ", "_")
        result.figures.append(
            plots.embedding_map_png(
                ctx.output_dir / FOLDER / f"embedding_map_{safe}.png",
                kind,
                coords,
                labels,
                scores,
                method,
            )
        )
    result.details["embedding_maps"] = {"projection": method, "by_label": maps}
    if not maps:
        result.notes.append("Embedding maps: the proteins carry no label with 2+ values.")


def _mean(features: EncoderFeatures, sequences: list[str]) -> np.ndarray:
    return features.mean(sequences, "interpret embeddings").astype(np.float64)


def run_interpret(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Attention-head contact quality, logit lens and embedding maps for model and random-init."""
    result = ProbeResult("interpret")
    proteins = _proteins(ctx, cfg, result)
    context = ctx.encoders[0].settings.max_length
    _head_quality(ctx, cfg, proteins, context, result)
    _logit_lens(ctx, cfg, proteins, context, result)
    _embedding_maps(ctx, cfg, proteins, result)
    result.notes.append(
        f"Interpret: {len(proteins)} proteins; attention maps and logit lens read the first "
        f"{context} residues (the model's context) of longer proteins; mean embeddings of "
        f"layer {ctx.encoders[0].layer} cover whole proteins (wensu-embed's long-input policy). "
        "Head P@L: long range (>= 24), top L pairs of the head's own symmetrised APC map, "
        f"contacts CB < {cfg['cutoff']} Å. Logit lens: final LayerNorm + LM head on every "
        f"layer; masked accuracy with {cfg['mask_rate']:.0%} of residues set to <mask> "
        "(seeded). Embedding-map scores in the full space: silhouette (cosine) and "
        f"leave-one-out {cfg['knn_k']}-NN accuracy (AMR: neighbours of the same family excluded)."
    )
    return result
