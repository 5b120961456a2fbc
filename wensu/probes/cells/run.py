"""``cell_type`` probe: frozen cell embeddings -> logistic regression, next to LR-HVG / LR-PCA.

Tasks (labels: ``label_column``, default ``cell_type_coarse``), as in
:mod:`wensu.probes.cells.baselines` and experiments/benchmarks/cell_baselines.py:

* cross-dataset: fit on ``train_files`` (Kang 2018 control + pbmc3k), test on each of
  ``test_files`` (Zheng 2017 sorted x2, Symphony, PBMC4k), ``merges`` mapping predicted classes
  onto coarser test labels; test classes never seen in training are left out and counted;
* within-dataset: ``within`` (Kang control), 80/20 by a hash of the cell key;
* held-out donor: ``held_out_donor`` (Kang control), each donor held out in turn, pooled.

Columns: ``model`` (the checkpoint's mean-pooled embeddings), ``random-init`` (same
architecture, fresh weights), ``LR-HVG`` and ``LR-PCA`` (the baselines, same cells, their own
gene protocol). Embedding genes: training cells over the genes every training file measures; a
test cell over those of them its file measures (absent genes are absent, not zero). When a test
file measures fewer than ``min_shared_fraction`` of them, the training cells are embedded again
over the shared genes only, so the two sides see comparable inputs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wensu.data.cell_inputs import CellFileSpec, parse_file_spec
from wensu.data.cell_split import SplitRouter
from wensu.probes.cells.baselines import (
    DEFAULT_CS,
    LabelledCells,
    classification_metrics,
    common_genes,
    concat,
    confusion_grid_png,
    evaluate_split,
    load_labelled,
)
from wensu.probes.cells.probe import (
    embed_tokens,
    embedding_png,
    score_embeddings,
    stable_cell_subset,
    tokenize,
)
from wensu.probes.common.context import MODEL, RANDOM_INIT, EvalContext, ProbeResult
from wensu.probes.common.errors import ProbeDataError

METHODS = (MODEL, RANDOM_INIT, "LR-HVG", "LR-PCA")
_BASELINE_KEYS = {"LR-HVG": "hvg", "LR-PCA": "pca"}
DEFAULTS: dict[str, Any] = {
    "label_column": "cell_type_coarse",
    "train_files": [],
    "test_files": [],
    "gene_column": None,
    "merges": {},
    "within": None,
    "within_test_fraction": 0.2,
    "held_out_donor": None,
    "max_donors": None,
    "max_cells_per_file": None,
    "min_shared_fraction": 0.9,
    "min_shared_genes": 50,
    "n_hvg": 2000,
    "n_pcs": 50,
    "Cs": list(DEFAULT_CS),
    "baselines": True,
    "embedding_plot_cells": 6000,
    "layers": None,
}


def input_file(entry: str, folder: Path, label_column: str) -> CellFileSpec:
    """A ``train_files``/``test_files`` entry: a built-in file stem in ``<data_dir>/singlecell``
    or any ``.h5ad`` path, either optionally followed by ``:obs_column`` (that file's labels)."""
    spec = parse_file_spec(str(entry), label_column)
    if spec.path.suffix != ".h5ad" and not spec.path.exists():
        builtin = parse_file_spec(f"{folder / spec.path.name}.h5ad", label_column)
        if not builtin.path.is_file():
            head, _, column = str(entry).rpartition(":")
            if head and (folder / f"{head}.h5ad").is_file():
                return CellFileSpec(folder / f"{head}.h5ad", column)
            raise ProbeDataError(
                f"probe.cell_type: {entry!r} is neither a file in {folder} nor an .h5ad path"
            )
        return builtin
    if not spec.path.is_file():
        raise ProbeDataError(f"{spec.path}: cell-type probe input not found")
    return spec


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ProbeDataError(f"probe.cell_type: unknown setting(s) {unknown}")
    merged = {**DEFAULTS, **settings}
    if not merged["train_files"] or not (
        merged["test_files"] or merged["within"] or merged["held_out_donor"]
    ):
        raise ProbeDataError("probe.cell_type: needs train_files and at least one task")
    return merged


class _Embedder:
    """Embeddings per (file, gene set), computed once for both encoders."""

    def __init__(self, ctx: EvalContext):
        self.models = ctx.cells
        self.cache: dict[tuple, dict[str, np.ndarray]] = {}
        self.outside_vocab: dict[str, int] = {}
        self.empty_cells: dict[str, int] = {}
        self.seconds = 0.0
        self.cells_embedded = 0

    def __call__(self, part: LabelledCells, genes: np.ndarray) -> dict[str, np.ndarray]:
        key = (part.name, len(part.cell_ids), hash(tuple(genes)))
        if key not in self.cache:
            models = self.models
            tokens = tokenize(
                part,
                genes,
                models.vocab_ids,
                num_bins=models.num_bins,
                target_sum=models.target_sum,
                max_genes=models.max_genes,
            )
            self.outside_vocab[f"{part.name} ({len(genes)} genes)"] = tokens.genes_outside_vocab
            self.empty_cells[part.name] = tokens.cells_without_tokens
            started = time.perf_counter()
            self.cache[key] = {
                name: embed_tokens(
                    encoder, tokens, max_tokens=models.max_tokens, device=models.device
                )
                for name, encoder in models.encoders.items()
            }
            self.seconds += time.perf_counter() - started
            self.cells_embedded += len(part.cell_ids) * len(models.encoders)
        return self.cache[key]


def _stack(embedder: _Embedder, parts: list[LabelledCells], genes: np.ndarray) -> dict:
    pieces = [embedder(p, genes) for p in parts]
    return {m: np.concatenate([p[m] for p in pieces]) for m in pieces[0]}


def _public(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("truth", "predicted")}


def _task(
    embedded_train: dict,
    y_train: np.ndarray,
    embedded_test: dict,
    y_test: np.ndarray,
    baseline: dict | None,
    s: dict,
    seed: int,
    merge: dict | None = None,
) -> dict[str, dict]:
    out = {
        name: score_embeddings(
            embedded_train[name],
            y_train,
            embedded_test[name],
            y_test,
            merge=merge,
            seed=seed,
            Cs=s["Cs"],
            layers=s["layers"],
        )
        for name in (MODEL, RANDOM_INIT)
    }
    if baseline is not None:
        for column, key in _BASELINE_KEYS.items():
            out[column] = baseline[key]
    return out


def _baseline(train: LabelledCells, test: LabelledCells, s: dict, seed: int, merge=None):
    if not s["baselines"]:
        return None
    return evaluate_split(
        train,
        test,
        n_hvg=s["n_hvg"],
        n_pcs=s["n_pcs"],
        seed=seed,
        merge=merge,
        Cs=s["Cs"],
        return_predictions=True,
    )


def run_cell_type(ctx: EvalContext, settings: dict) -> ProbeResult:
    """Run every configured task; rows = macro-F1 and accuracy per task and method."""
    from sklearn.exceptions import ConvergenceWarning

    # lbfgs stops at max_iter for the largest C values; those fits still count (the baselines
    # behave the same), so the repeated warning is noise in the log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _run(ctx, settings)


def _run(ctx: EvalContext, settings: dict) -> ProbeResult:
    if ctx.cells is None:
        raise ProbeDataError("cell_type needs a cell-model checkpoint (see wensu-train cells)")
    s = _settings(settings)
    seed, folder = ctx.seed, ctx.data_dir / "singlecell"
    result = ProbeResult("cell_type")
    loaded: dict[str, LabelledCells] = {}

    def load(entry: str) -> LabelledCells:
        if entry not in loaded:
            spec = input_file(entry, folder, s["label_column"])
            result.inputs.append(spec.path)
            cells = load_labelled(spec.path, spec.label_column, gene_column=s["gene_column"])
            loaded[entry] = stable_cell_subset(cells, s["max_cells_per_file"])
        return loaded[entry]

    embedder = _Embedder(ctx)
    tasks: dict[str, dict] = {}
    train_parts = [load(n) for n in s["train_files"]]
    train = concat(train_parts, "+".join(p.name for p in train_parts))
    train_genes = train.genes
    for entry in s["test_files"]:
        test = load(entry)
        name = test.name
        merge = dict(s["merges"].get(name) or {})
        shared = common_genes(train, test)
        if len(shared) < s["min_shared_genes"]:
            raise ProbeDataError(
                f"{test.name}: shares only {len(shared)} genes with the training files "
                f"(min_shared_genes={s['min_shared_genes']}); check gene_column (symbols or "
                "Ensembl ids)"
            )
        enough = len(shared) >= s["min_shared_fraction"] * len(train_genes)
        genes_for_train = train_genes if enough else shared
        scores = _task(
            _stack(embedder, train_parts, genes_for_train),
            train.labels,
            embedder(test, shared),
            test.labels,
            _baseline(train, test, s, seed, merge),
            s,
            seed,
            merge,
        )
        tasks[f"cross: {name}"] = {
            "genes_train_embedding": int(len(genes_for_train)),
            "genes_test_embedding": int(len(shared)),
            "merge": merge,
            **scores,
        }

    donor_name = s["held_out_donor"]
    within_name = s["within"]
    for name in {n for n in (within_name, donor_name) if n}:
        if name not in s["train_files"]:
            load(name)
    if within_name:
        cells = load(within_name)
        genes = train_genes if within_name in s["train_files"] else cells.genes
        X = embedder(cells, genes)
        fraction = float(s["within_test_fraction"])
        router = SplitRouter({"train": 1 - fraction, "valid": 0.0, "test": fraction}, seed)
        split = router(cells.name, cells.cell_ids, cells.donors)
        is_train, is_test = split == "train", split == "test"
        scores = _task(
            {m: X[m][is_train] for m in X},
            cells.labels[is_train],
            {m: X[m][is_test] for m in X},
            cells.labels[is_test],
            _baseline(cells.subset(is_train), cells.subset(is_test), s, seed),
            s,
            seed,
        )
        tasks[f"within: {within_name} {1 - fraction:.0%}/{fraction:.0%}"] = scores
    if donor_name:
        cells = load(donor_name)
        genes = train_genes if donor_name in s["train_files"] else cells.genes
        X = embedder(cells, genes)
        donors = sorted(set(cells.donors) - {""})
        if len(donors) < 2:
            raise ProbeDataError(f"{donor_name}: held-out-donor task needs >= 2 donors")
        folds = []
        for donor in donors[: s["max_donors"]]:
            held = cells.donors == donor
            folds.append(
                _task(
                    {m: X[m][~held] for m in X},
                    cells.labels[~held],
                    {m: X[m][held] for m in X},
                    cells.labels[held],
                    _baseline(cells.subset(~held), cells.subset(held), s, seed),
                    s,
                    seed,
                )
            )
        pooled = {}
        for method in folds[0]:
            truth = np.concatenate([f[method]["truth"] for f in folds])
            predicted = np.concatenate([f[method]["predicted"] for f in folds])
            pooled[method] = {
                **classification_metrics(truth, predicted, sorted(set(truth))),
                "mean_fold_macro_f1": float(np.mean([f[method]["macro_f1"] for f in folds])),
                "fold_layers": [f[method].get("layer") for f in folds],
            }
        tasks[f"held-out donor: {donor_name} ({len(folds)} folds pooled)"] = pooled

    _report(ctx, result, s, tasks, embedder, train, train_parts, train_genes)
    return result


def _report(ctx, result, s, tasks, embedder, train, train_parts, train_genes) -> None:
    details: dict[str, Any] = {"settings": s, "tasks": {}}
    for task, scores in tasks.items():
        methods = [m for m in METHODS if m in scores]
        for metric in ("macro_f1", "accuracy"):
            label = "macro-F1" if metric == "macro_f1" else "accuracy"
            result.add_row(task, label, {m: scores[m][metric] for m in methods})
        details["tasks"][task] = {k: (_public(v) if k in METHODS else v) for k, v in scores.items()}
    out_dir = ctx.output_dir / "cell_type"
    panels = [(f"{task} (model)", tasks[task][MODEL]) for task in tasks]
    grid = confusion_grid_png(out_dir / "confusion_model.png", panels)
    result.figures.append(f"cell_type/{grid.name}")
    embedded = {m: x[:, -1] for m, x in _stack(embedder, train_parts, train_genes).items()}
    pick = np.arange(len(train.labels))
    limit = s["embedding_plot_cells"]
    if limit and len(pick) > limit:
        pick = np.sort(np.random.default_rng(ctx.seed).choice(len(pick), limit, replace=False))
    png, method = embedding_png(
        out_dir / "embedding_map.png",
        [
            (f"{name}: {len(pick)} training cells", embedded[name][pick], train.labels[pick])
            for name in (MODEL, RANDOM_INIT)
        ],
        seed=ctx.seed,
    )
    result.figures.append(f"cell_type/{png.name}")
    info = ctx.cells.info
    holdout = (info.get("dataset") or {}).get("holdout") or {}
    held = set(holdout.get("datasets") or [])
    names = [parse_file_spec(str(e)).name for e in s["test_files"]]
    unseen = [n for n in names if n in held and holdout.get("split") == "test"]
    seen = [n for n in names if n not in unseen]
    exposure = (
        f"Pretraining did not see the expression of the cross-dataset test files {unseen} "
        f"(held out to the test split of the pretraining data)."
        if unseen
        else ""
    )
    if seen:
        exposure += f" Pretraining may have seen the expression (never labels) of {seen}."
    for name in {s["within"], s["held_out_donor"]} - {None}:
        if name not in held:
            exposure += (
                f" Pretraining saw the expression (not the labels) of {name}, including the "
                "within-dataset and held-out-donor test cells."
            )
    details.update(
        exposure=exposure.strip(),
        pretraining_dataset=info.get("dataset"),
        genes_outside_vocab=embedder.outside_vocab,
        cells_without_tokens=embedder.empty_cells,
        embedding_seconds=embedder.seconds,
        cells_embedded=embedder.cells_embedded,
        cells_per_s_embedding=embedder.cells_embedded / max(embedder.seconds, 1e-9),
        embedding_map=method,
    )
    result.details = details
    result.notes += [
        exposure.strip(),
        "model / random-init: mean-pooled hidden states of the frozen encoder -> standardised "
        "logistic regression; the layer (0 = embeddings .. num_layers = final, or "
        f"{s['layers']}) and C are picked by macro-F1 on a 20% validation split of the "
        "training cells (metrics.json: `layer`); LR-HVG / LR-PCA: "
        "wensu.probes.cells.baselines on the same cells.",
        f"Embedding genes: training cells over the {len(train_genes)} genes all training files "
        f"measure; test cells over those their file measures (re-embedding the training cells "
        f"over the shared genes when fewer than {s['min_shared_fraction']:.0%} are measured). "
        f"Genes outside the checkpoint vocabulary (dropped): {embedder.outside_vocab}.",
        f"max_cells_per_file: {s['max_cells_per_file']} (fixed CRC32 subset); embedding "
        f"{embedder.cells_embedded} cells took {embedder.seconds:.0f} s "
        f"({details['cells_per_s_embedding']:.1f} cells/s, both encoders).",
        f"{method} map of the training cells' final-layer embeddings, coloured by "
        f"{s['label_column']}.",
    ]
