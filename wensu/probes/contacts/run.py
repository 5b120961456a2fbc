"""The contact probe: logistic regression on APC-corrected attention maps, fitted on a few
training structures (CATH-103 by default) and tested on the other sets; precision at L, L/2, L/5
for short, medium and long range; skipped structures counted by reason. Any set may be user
files (PDB/mmCIF, backbone JSON/JSONL; see :mod:`wensu.probes.contacts.user_sets`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from wensu.probes.common import inputs, report
from wensu.probes.common.context import EvalContext, ProbeResult, stable_subset
from wensu.probes.common.inputs import UserSet, resolve_entries
from wensu.probes.common.overlap import overlapping_mask
from wensu.probes.common.structures import ChainStructure, contact_map
from wensu.probes.contacts.data import CONTACT_SET_PATHS, ContactSet, load_contact_set
from wensu.probes.contacts.probe import (
    attention_features,
    beyond_window_fraction,
    contact_precisions,
    fit_contact_regression,
    predict_contacts,
    training_pairs,
)
from wensu.probes.contacts.user_sets import CONTACT_SUFFIXES, load_user_contact_set
from wensu.progress import progress_bar

STRUCTURE_DIR = "structure"


def _usable(structures: list[ChainStructure], max_length: int, skipped) -> list[ChainStructure]:
    kept = []
    for s in structures:
        if len(s.sequence) > max_length:
            skipped["longer_than_max_length"] += 1
        elif s.n_observed < 2:
            skipped["no_coordinates"] += 1
        else:
            kept.append(s)
    return kept


def _set_loader(ctx: EvalContext, cfg: dict[str, Any]) -> Callable[..., ContactSet]:
    """Load a resolved entry: a built-in set from the data folder, or a user set."""
    root = ctx.data_dir / STRUCTURE_DIR

    def load(item: str | UserSet, **options: Any) -> ContactSet:
        if isinstance(item, str):
            return load_contact_set(item, root, show_progress=ctx.show_progress, **options)
        return load_user_contact_set(
            item, min_plddt=cfg.get("min_plddt"), show_progress=ctx.show_progress, **options
        )

    return load


def _load_sets(ctx: EvalContext, cfg: dict[str, Any]) -> tuple[ContactSet, dict[str, ContactSet]]:
    option = "probe.contacts"
    [train_item] = resolve_entries(
        [cfg["train_set"]], CONTACT_SET_PATHS, CONTACT_SUFFIXES, where=f"{option}.train_set"
    )
    test_items = resolve_entries(
        cfg["test_sets"], CONTACT_SET_PATHS, CONTACT_SUFFIXES, where=f"{option}.test_sets"
    )
    load = _set_loader(ctx, cfg)
    train_set = load(train_item)
    train_set.structures = stable_subset(
        train_set.structures, cfg["train_size"], key=lambda s: s.name
    )
    train_names = {s.name for s in train_set.structures}
    tests: dict[str, ContactSet] = {}
    for item in test_items:
        name = inputs.set_name(item)
        test = load(item, limit=cfg["test_limit"], select=cfg["test_select"])
        if name == train_set.name:
            test.structures = [s for s in test.structures if s.name not in train_names]
        flags, _ = overlapping_mask(
            [s.sequence for s in test.structures], [s.sequence for s in train_set.structures]
        )
        test.skipped["overlaps_training"] += sum(flags)
        test.structures = [s for s, f in zip(test.structures, flags, strict=True) if not f]
        test.structures = _usable(test.structures, cfg["max_length"], test.skipped)
        tests[name] = test
    train_set.structures = _usable(train_set.structures, cfg["max_length"], train_set.skipped)
    return train_set, tests


def _set_summary(contact_set: ContactSet) -> dict[str, Any]:
    summary = {
        "evaluated": len(contact_set.structures),
        "skipped": dict(contact_set.skipped),
        "errors": contact_set.errors,
    }
    masked = {
        "low_plddt_residues": sum(s.low_plddt for s in contact_set.structures),
        "numbering_gap_residues": sum(s.filled for s in contact_set.structures),
    }
    return {**summary, **{k: v for k, v in masked.items() if v}}


def run_contacts(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Fit and evaluate the contact regression for the model and its random-init twin."""
    result = ProbeResult("contacts")
    train_set, tests = _load_sets(ctx, cfg)
    for s in [train_set, *tests.values()]:
        result.inputs += s.files
    result.details["structures"] = {
        name: _set_summary(s) for name, s in {f"train:{train_set.name}": train_set, **tests}.items()
    }
    maps = {
        s.name: contact_map(s.coords, cfg["cutoff"])
        for t in [train_set, *tests.values()]
        for s in t.structures
    }
    per_set: dict[str, dict[str, dict[str, float]]] = {}
    examples: dict[str, dict[str, np.ndarray]] = {}
    regression: dict[str, Any] = {}
    for features in ctx.encoders:
        xs, ys = [], []
        for s in progress_bar(
            train_set.structures,
            desc=f"contacts train [{features.name}]",
            enabled=ctx.show_progress,
        ):
            x, y = training_pairs(attention_features(features.attention(s.sequence)), *maps[s.name])
            xs.append(x)
            ys.append(y)
        model = fit_contact_regression(
            np.concatenate(xs),
            np.concatenate(ys),
            penalty=cfg["penalty"],
            c=cfg["C"],
            seed=ctx.seed,
        )
        regression[features.name] = {
            "nonzero_weights": model.nonzero,
            "weights": int(model.weights.size),
            "training_pairs": int(sum(len(y) for y in ys)),
        }
        if model.nonzero == 0:
            result.notes.append(
                f"{features.name}: the {cfg['penalty'].upper()} regression kept no attention "
                "feature, so its predictions are constant (precision = contact rate)."
            )
        for set_name, test in tests.items():
            metrics: list[dict[str, float]] = []
            for s in progress_bar(
                test.structures,
                desc=f"contacts {set_name} [{features.name}]",
                enabled=ctx.show_progress,
            ):
                scores = predict_contacts(model, attention_features(features.attention(s.sequence)))
                contacts, valid = maps[s.name]
                metrics.append(contact_precisions(scores, contacts, valid))
                if len(examples) < cfg["figure_examples"] or s.name in examples:
                    examples.setdefault(s.name, {})[features.name] = scores
            if metrics:
                per_set.setdefault(set_name, {})[features.name] = {
                    k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]
                }
    result.details["regression"] = regression
    result.details["per_set"] = per_set
    for set_name, by_model in per_set.items():
        for metric in next(iter(by_model.values())):
            result.add_row(
                f"contacts {set_name}", metric, {m: v[metric] for m, v in by_model.items()}
            )
    for name, predicted in examples.items():
        path = ctx.output_dir / "contacts" / f"map_{name}.png"
        result.figures.append(report.contact_map_png(path, name, maps[name][0], predicted))
    window = ctx.window
    all_tests = [s for t in tests.values() for s in t.structures]
    if window is not None and all_tests:
        beyond = float(np.mean([beyond_window_fraction(*maps[s.name], window) for s in all_tests]))
        result.details["long_range_contacts_beyond_window"] = beyond
        result.notes.append(
            f"Windowed model (window {window}): attention is zero for |i-j| > {window}, so the "
            f"regression sees no direct signal there; on average {beyond:.1%} of the test "
            "long-range contacts lie beyond the window."
        )
    result.notes.append(
        f"Contacts: CB (CA for Gly) < {cfg['cutoff']} Å; PDB/mmCIF parsed with Bio.PDB, "
        "backbone-only sets (CATH-103, TS50, user JSON/JSONL) use a virtual CB; user files "
        "without SEQRES get one unknown residue per numbering gap"
        + (
            f"; residues with Cα B-factor (pLDDT) < {cfg['min_plddt']} masked"
            if cfg.get("min_plddt") is not None
            else ""
        )
        + ". Regression: ESM-style "
        "symmetrised + APC attention of all layers and heads, "
        f"{cfg['penalty'].upper()} logistic regression (C={cfg['C']}) on "
        f"{len(train_set.structures)} {train_set.name} structures; P@L/k with L = sequence length."
    )
    return result
