"""Fine-tuned cell encoder vs baselines on the cell_type probe's cross-dataset test files.

Training cells: Kang 2018 control (fixed 5,000-cell CRC32 subset, as the probe) + pbmc3k,
``cell_type_coarse``. Test files (held out of pretraining and fine-tuning): Zheng 2017 sorted
(mudan, garnett), Symphony, PBMC4k (monocytes/DCs scored as its ``Myeloid``). Test cells whose
class never occurs in training are left out and counted (Symphony's 3 CD34+, PBMC4k's 20
Unknown are unusable labels). Methods, each for seeds 0, 1, 2:

* ``wensu-finetuned``: ``wensu-train experiment=cells_finetune`` from the pretrained checkpoint;
* ``random-init``: the same fine-tuning from fresh weights of the same shape;
* ``LR-HVG``: the probe's baseline (standardised LR on 2,000 HVGs, C by validation macro-F1);
* ``L1-LR``: L1 logistic regression (liblinear) on log1p(CP10k) of all shared genes, C by
  validation macro-F1 (the published scBERT re-evaluation baseline);
* ``kNN-PCA``: k nearest neighbours on 50 PCs of the standardised HVGs, k by validation.

Gene panels. The baselines are refitted per test file on the genes it shares with the training
files; the fine-tuned classifier is trained once on the training files' shared panel and used on
every test file, except where a test file measures less than ``QUERY_PANEL_COVERAGE`` of that
panel (Symphony: 231 of 1,280 genes). For such a file a second classifier is fine-tuned with
``data.panel_from=[that file]`` (only its gene list is read, never its cells or labels), the
``wensu-annotate`` workflow for a query with a small gene panel, in both arms and every seed.

Stages (each writes JSON under --work; ``report`` collects them into experiments/results)::

    python experiments/benchmarks/cell_finetune.py baselines --seeds 0 1 2
    python experiments/benchmarks/cell_finetune.py finetune --checkpoint PRE.ckpt --arm pretrained \
        --seed 0 [wensu-train overrides ...]
    python experiments/benchmarks/cell_finetune.py evaluate --arm pretrained --seed 0
    python experiments/benchmarks/cell_finetune.py finetune ... --query QUERY_FILE_NAME
    python experiments/benchmarks/cell_finetune.py evaluate ... --query QUERY_FILE_NAME
    python experiments/benchmarks/cell_finetune.py report --pretrain-log /tmp/cells17/pretrain.log
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CELLS = Path(os.environ.get("WENSU_SHARED_DATA", REPO.parent / "shared" / "data")) / "singlecell"
RESULTS = REPO / "experiments" / "results" / "cells_finetune"
KANG = "kang2018_ifnb_ctrl_muscat_12261"
TRAIN_FILES = (KANG, "pbmc3k_seurat_annotated")
TEST_FILES = (
    "zheng2017_sorted_mudan_2140",
    "zheng2017_sorted_garnett_800",
    "pbmc_10x_3pv1_3pv2_5p_symphony_1500",
    "pbmc4k_10x_soupx_2170",
)
MERGES = {
    "pbmc4k_10x_soupx_2170": {"CD14 Mono": "Myeloid", "FCGR3A Mono": "Myeloid", "DC": "Myeloid"}
}
MAX_CELLS_PER_FILE = 5000
LABEL = "cell_type_coarse"
CS = (0.01, 0.1, 1.0, 10.0, 100.0)
L1_CS = (0.01, 0.1, 1.0, 10.0)
KS = (5, 15, 30)
QUERY_PANEL_COVERAGE = 0.9
FINETUNE_ARGS = [
    "data.max_cells_per_file=5000",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def _path(name: str) -> Path:
    return CELLS / f"{name}.h5ad"


def _training_cells():
    from wensu.probes.cells.baselines import concat, load_labelled
    from wensu.probes.cells.probe import stable_cell_subset

    parts = [
        stable_cell_subset(load_labelled(_path(n), LABEL), MAX_CELLS_PER_FILE) for n in TRAIN_FILES
    ]
    return concat(parts, "kang_ctrl+pbmc3k")


def _select(fit, X, y, candidates, seed):
    """Best candidate by validation macro-F1 on a stratified 20% split, refitted on all."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=0.2, random_state=seed, stratify=y
    )
    scores = {
        c: float(f1_score(y_val, fit(c).fit(X_fit, y_fit).predict(X_val), average="macro"))
        for c in candidates
    }
    best = max(scores, key=lambda c: (scores[c], -float(c)))
    return fit(best).fit(X, y), {
        "chosen": best,
        "val_macro_f1": {str(k): v for k, v in scores.items()},
    }


def _score(model, X_test, truth, merge):
    from wensu.probes.cells.baselines import classification_metrics

    predicted = np.array([merge.get(p, p) for p in model.predict(X_test)], dtype=object)
    return classification_metrics(truth, predicted, sorted(set(truth)))


def run_baselines(seed: int, out: Path) -> dict:
    """LR-HVG, L1-LR and kNN-PCA for every test file at one seed."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from wensu.probes.cells.baselines import (
        common_genes,
        evaluate_split,
        highly_variable_genes,
        load_labelled,
        log1p_cp10k,
    )

    train = _training_cells()
    results = {}
    for name in TEST_FILES:
        started, cpu = time.perf_counter(), _cpu()
        test = load_labelled(_path(name), LABEL)
        merge = MERGES.get(name, {})
        seen = {merge.get(c, c) for c in np.unique(train.labels)}
        usable = np.isin(test.labels, list(seen))
        truth = test.labels[usable]
        row = {"n_test": int(usable.sum()), "n_test_excluded_unseen_class": int((~usable).sum())}
        hvg = evaluate_split(train, test, seed=seed, features=("hvg",), merge=merge, Cs=CS)
        row["LR-HVG"] = hvg["hvg"]
        genes = common_genes(train, test)
        X_all = log1p_cp10k(train.restrict(genes))
        T_all = log1p_cp10k(test.restrict(genes))[usable]
        row["genes_shared"] = int(genes.size)
        l1 = lambda C: OneVsRestClassifier(  # noqa: E731
            LogisticRegression(penalty="l1", solver="liblinear", C=C, max_iter=300)
        )
        model, chosen = _select(l1, X_all, train.labels, L1_CS, seed)
        row["L1-LR"] = {**_score(model, T_all, truth, merge), **chosen}
        columns = highly_variable_genes(X_all, 2000)
        X_hvg, T_hvg = X_all[:, columns].toarray(), T_all[:, columns].toarray()
        knn = lambda k: make_pipeline(  # noqa: E731
            StandardScaler(), PCA(50, random_state=seed), KNeighborsClassifier(k)
        )
        model, chosen = _select(knn, X_hvg, train.labels, KS, seed)
        row["kNN-PCA"] = {**_score(model, T_hvg, truth, merge), **chosen}
        row["seconds"] = round(time.perf_counter() - started, 2)
        row["cpu_seconds"] = round(_cpu() - cpu, 2)
        results[name] = row
        print(
            name,
            {m: round(row[m]["macro_f1"], 3) for m in ("LR-HVG", "L1-LR", "kNN-PCA")},
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return results


def run_dir_of(work: Path, arm: str, seed: int, query: str | None) -> Path:
    """One run per arm and seed, plus one per query-panel test file."""
    return work / (f"{arm}_seed{seed}" + (f"_panel-{query}" if query else ""))


def run_finetune(
    checkpoint: str, arm: str, seed: int, work: Path, extra: list[str], query: str | None = None
) -> Path:
    """``wensu-train experiment=cells_finetune`` (resumes when its run dir exists); with
    ``query`` the panel is narrowed to the genes that test file measures."""
    run_dir = run_dir_of(work, arm, seed, query)
    files = ",".join(str(_path(n)) for n in TRAIN_FILES)
    if query:
        extra = [*extra, f"data.panel_from=[{_path(query)}]"]
    command = [
        str(Path(sys.executable).parent / "wensu-train"),
        "experiment=cells_finetune",
        f"finetune.checkpoint={checkpoint}",
        f"finetune.pretrained={'true' if arm == 'pretrained' else 'false'}",
        f"data.train_files=[{files}]",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
        *FINETUNE_ARGS,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env)
    return run_dir


def evaluate_run(run_dir: Path, files: tuple[str, ...] = TEST_FILES) -> dict:
    """Test-file metrics of a fine-tuned run's best.ckpt."""
    from wensu.annotate.predict import predict_cells
    from wensu.checkpoint import load_cell_classifier
    from wensu.data.cell_inputs import labelled_only, read_cell_file
    from wensu.probes.cells.baselines import classification_metrics

    classifier, info = load_cell_classifier(run_dir / "checkpoints" / "best.ckpt")
    results = {}
    for name in files:
        started = time.perf_counter()
        cells = labelled_only(read_cell_file(f"{_path(name)}:{LABEL}"))
        merge = MERGES.get(name, {})
        seen = {merge.get(c, c) for c in info["classes"]}
        usable = np.isin(cells.labels, list(seen))
        cells = cells.subset(usable)
        predictions = predict_cells(classifier, info, cells)
        labels, _ = predictions.predicted()
        predicted = np.array([merge.get(p, p) for p in labels], dtype=object)
        metrics = classification_metrics(cells.labels, predicted, sorted(set(cells.labels)))
        results[name] = {
            **metrics,
            "genes_mapped": predictions.mapping.overlap,
            "n_test_excluded_unseen_class": int((~usable).sum()),
            "predict_seconds": round(time.perf_counter() - started, 2),
        }
    return results


def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "values": values.tolist(),
    }


def report(work: Path, seeds: list[int], pretrain_log: Path | None) -> dict:
    from wensu.probes.cells.baselines import confusion_grid_png

    methods: dict[str, dict[str, dict]] = {}
    confusions = []
    missing = []
    for seed in seeds:
        path = work / f"baselines_seed{seed}.json"
        if not path.is_file():
            missing.append(path.name)
        baselines = json.loads(path.read_text()) if path.is_file() else {}
        for name, row in baselines.items():
            for method in ("LR-HVG", "L1-LR", "kNN-PCA"):
                methods.setdefault(method, {}).setdefault(name, {})[seed] = row[method]
        for arm, label in (("pretrained", "wensu-finetuned"), ("random", "random-init")):
            for query in (None, *TEST_FILES):
                run_dir = run_dir_of(work, arm, seed, query)
                cached = run_dir / "test_metrics.json"
                if not cached.is_file():  # `evaluate` stage not run (or not finished) for it
                    if query is None:
                        missing.append(str(cached))
                    continue
                summary = json.loads((run_dir / "summary.json").read_text())
                for name, metrics in json.loads(cached.read_text()).items():
                    metrics["finetune_cpu_seconds"] = summary["cpu_seconds_this_session"]
                    metrics["finetune_steps"] = summary["global_step"]
                    metrics["classifier"] = run_dir.name
                    methods.setdefault(label, {}).setdefault(name, {})[seed] = metrics
    table = {}
    for method, by_file in methods.items():
        table[method] = {
            name: {
                "macro_f1": _mean_std([m["macro_f1"] for m in per_seed.values()]),
                "accuracy": _mean_std([m["accuracy"] for m in per_seed.values()]),
                "n": next(iter(per_seed.values()))["n"],
            }
            for name, per_seed in by_file.items()
        }
    for name in TEST_FILES:
        for method in ("wensu-finetuned", "random-init", "LR-HVG", "L1-LR"):
            if method in methods and name in methods[method]:
                first = methods[method][name][seeds[0]]
                confusions.append((f"{method} / {name} (seed {seeds[0]})", first))
    RESULTS.mkdir(parents=True, exist_ok=True)
    confusion_grid_png(RESULTS / "confusion.png", confusions)
    goal = {
        name: all(
            table["wensu-finetuned"][name]["macro_f1"]["mean"] >= table[b][name]["macro_f1"]["mean"]
            for b in ("LR-HVG", "L1-LR")
        )
        for name in TEST_FILES
        if "wensu-finetuned" in table
    }
    cpu = {}
    if pretrain_log and pretrain_log.is_file():
        text = pretrain_log.read_text()
        user = float(text.split("User time (seconds):")[1].split()[0])
        system = float(text.split("System time (seconds):")[1].split()[0])
        wall = text.split("Elapsed (wall clock) time (h:mm:ss or m:ss):")[1].split()[0]
        cpu["pretrain_cpu_seconds"] = round(user + system, 1)
        cpu["pretrain_wall"] = wall
    finetune_cpu = [
        m["finetune_cpu_seconds"]
        for name_seed in methods.get("wensu-finetuned", {}).values()
        for m in name_seed.values()
    ]
    if finetune_cpu:
        cpu["finetune_cpu_seconds_per_run"] = sorted(set(finetune_cpu))
    result = {
        "what": "cell-type fine-tuning vs baselines, cross-dataset (train Kang ctrl + pbmc3k)",
        "date": dt.date.today().isoformat(),
        "seeds": seeds,
        "table": table,
        "goal_met_per_test_file": goal,
        "missing": missing,
        "cpu": cpu,
        "per_seed": methods,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "note": "2 CPU cores, two runs at a time with 1 torch thread each; CPU seconds "
            "are the budget figure",
        },
        "versions": {p: metadata.version(p) for p in ("torch", "scikit-learn", "numpy", "wensu")},
        "command": " ".join(sys.argv),
    }
    (RESULTS / "results.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "table.md").write_text(markdown_table(table))
    return result


def markdown_table(table: dict) -> str:
    """macro-F1 / accuracy, mean +- std over seeds, one row per method, one column per file."""
    short = {"zheng2017_sorted_mudan_2140": "Zheng mudan", "zheng2017_sorted_garnett_800":
             "Zheng garnett", "pbmc_10x_3pv1_3pv2_5p_symphony_1500": "Symphony",
             "pbmc4k_10x_soupx_2170": "PBMC4k"}  # fmt: skip
    lines = [
        "| method (macro-F1 / accuracy) | " + " | ".join(short[n] for n in TEST_FILES) + " |",
        "|---" * (len(TEST_FILES) + 1) + "|",
    ]
    for method in ("wensu-finetuned", "random-init", "LR-HVG", "L1-LR", "kNN-PCA"):
        if method not in table:
            continue
        cells = []
        for name in TEST_FILES:
            row = table[method].get(name)
            if row is None:
                cells.append("—")
                continue
            f1, acc = row["macro_f1"], row["accuracy"]
            cells.append(
                f"{f1['mean']:.3f} ± {f1['std']:.3f} / {acc['mean']:.3f} ± {acc['std']:.3f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("baselines", "finetune", "evaluate", "report"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm", choices=("pretrained", "random"), default="pretrained")
    parser.add_argument("--checkpoint")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cells17/bench"))
    parser.add_argument("--pretrain-log", type=Path)
    parser.add_argument("--query", choices=TEST_FILES, help="narrow the panel to this test file")
    args, extra = parser.parse_known_args()  # the rest: wensu-train overrides (finetune)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if args.stage == "baselines":
            for seed in args.seeds:
                run_baselines(seed, args.work / f"baselines_seed{seed}.json")
        elif args.stage == "finetune":
            run_finetune(args.checkpoint, args.arm, args.seed, args.work, extra, args.query)
        elif args.stage == "evaluate":
            run_dir = run_dir_of(args.work, args.arm, args.seed, args.query)
            files = (args.query,) if args.query else TEST_FILES
            (run_dir / "test_metrics.json").write_text(json.dumps(evaluate_run(run_dir, files)))
        else:
            print(json.dumps(report(args.work, args.seeds, args.pretrain_log)["table"], indent=1))


if __name__ == "__main__":
    main()
