"""Cell-type baselines on the shared PBMC files: what a cell embedding must beat.

Logistic regression (standardised, seed 0, C picked by validation macro-F1 on 20% of the
training cells) on log1p(CP10k) of up to 2,000 highly variable genes of the training cells, and
on their first 50 principal components (``wensu.probes.cells.baselines``). Labels are the
harmonised ``cell_type_coarse`` column.

Splits:
* cross-dataset: train on Kang 2018 control (``kang2018_ifnb_ctrl_muscat_12261``) + pbmc3k
  (``pbmc3k_seurat_annotated``); test on the Zheng 2017 sorted cells
  (``zheng2017_sorted_mudan_2140``, ``zheng2017_sorted_garnett_800``), Symphony
  (``pbmc_10x_3pv1_3pv2_5p_symphony_1500``) and PBMC4k (``pbmc4k_10x_soupx_2170``). Genes: those
  measured in all three files of a pair (train files + that test file); CP10k over those genes.
  PBMC4k's ``Myeloid`` (monocytes + DCs unsplit) is scored by mapping predicted CD14 Mono,
  FCGR3A Mono and DC to Myeloid; test classes never seen in training (Symphony's 3 CD34+ cells)
  and unusable labels (PBMC4k's 20 ``Unknown``) are left out and counted.
* within-dataset: Kang control, 80/20 split by a hash of the cell key.
* held-out donor: Kang control, each of the 8 donors held out in turn (train on the other 7).

    nice .venv/bin/python -P experiments/benchmarks/cell_baselines.py
Writes experiments/results/cell_baselines.json and cell_baselines_confusion.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from wensu.preprocessing.cells.writer import SplitRouter

from wensu.probes.cells.baselines import (
    DEFAULT_CS,
    LabelledCells,
    classification_metrics,
    concat,
    confusion_grid_png,
    evaluate_split,
    load_labelled,
)

REPO = Path(__file__).resolve().parents[2]
CELLS = REPO.parent / "shared" / "data" / "singlecell"
RESULTS = REPO / "experiments" / "results"
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
FEATURES = ("hvg", "pca")


def _public(result: dict) -> dict:
    """A result without the per-cell prediction lists."""
    out = dict(result)
    for name in FEATURES:
        if name in out:
            out[name] = {k: v for k, v in out[name].items() if k not in ("truth", "predicted")}
    return out


def _pooled(results: list[dict]) -> dict:
    """Metrics over the concatenated predictions of several folds, plus per-fold means."""
    summary = {}
    for name in FEATURES:
        truth = np.concatenate([r[name]["truth"] for r in results])
        predicted = np.concatenate([r[name]["predicted"] for r in results])
        pooled = classification_metrics(truth, predicted, sorted(set(truth)))
        summary[name] = {
            "pooled": pooled,
            "mean_accuracy": float(np.mean([r[name]["accuracy"] for r in results])),
            "mean_macro_f1": float(np.mean([r[name]["macro_f1"] for r in results])),
            "min_accuracy": float(np.min([r[name]["accuracy"] for r in results])),
        }
    return summary


def _load(name: str) -> LabelledCells:
    return load_labelled(CELLS / f"{name}.h5ad", "cell_type_coarse")


def run(args: argparse.Namespace) -> dict:
    options = dict(n_hvg=args.n_hvg, n_pcs=args.n_pcs, seed=args.seed, return_predictions=True)
    kang = _load(KANG)
    train = concat([kang] + [_load(n) for n in TRAIN_FILES[1:]], "kang_ctrl+pbmc3k")
    cross = {}
    for name in TEST_FILES:
        started = time.perf_counter()
        cross[name] = evaluate_split(train, _load(name), merge=MERGES.get(name), **options)
        print(f"cross {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    router = SplitRouter({"train": 0.8, "valid": 0.0, "test": 0.2}, args.seed)
    split = router(kang.name, kang.cell_ids, kang.donors)
    within = evaluate_split(
        kang.subset(split == "train", f"{KANG}/train"),
        kang.subset(split == "test", f"{KANG}/test"),
        **options,
    )
    donors = {}
    for donor in sorted(set(kang.donors)):
        held = kang.donors == donor
        donors[donor] = evaluate_split(
            kang.subset(~held, f"{KANG}/not-{donor}"),
            kang.subset(held, f"{KANG}/donor-{donor}"),
            **options,
        )
        print(f"donor {donor}: done", file=sys.stderr)
    donor_summary = _pooled(list(donors.values()))

    panels = [(f"cross: {name} (HVG)", cross[name]["hvg"]) for name in TEST_FILES]
    panels.append((f"within: {KANG} 80/20 (HVG)", within["hvg"]))
    panels.append(
        ("held-out donor, Kang ctrl, 8 folds pooled (HVG)", donor_summary["hvg"]["pooled"])
    )
    return {
        "cross_dataset": {
            "train_files": list(TRAIN_FILES),
            "tests": {k: _public(v) for k, v in cross.items()},
        },
        "within_dataset": {KANG: _public(within)},
        "held_out_donor": {
            "dataset": KANG,
            "per_donor": {k: _public(v) for k, v in donors.items()},
            "summary": donor_summary,
        },
        "_panels": panels,
    }


def _headline(results: dict) -> dict:
    table = {}
    for name, result in results["cross_dataset"]["tests"].items():
        table[f"cross:{name}"] = {
            f: [result[f]["accuracy"], result[f]["macro_f1"]] for f in FEATURES
        }
    within = results["within_dataset"][KANG]
    table[f"within:{KANG}"] = {f: [within[f]["accuracy"], within[f]["macro_f1"]] for f in FEATURES}
    summary = results["held_out_donor"]["summary"]
    table["held_out_donor:kang(pooled)"] = {
        f: [summary[f]["pooled"]["accuracy"], summary[f]["pooled"]["macro_f1"]] for f in FEATURES
    }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-hvg", type=int, default=2000)
    parser.add_argument("--n-pcs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "cell_baselines.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    started = time.perf_counter()
    # One BLAS thread: on a shared 2-core machine more threads made lbfgs 8x slower.
    with threadpool_limits(1):
        results = run(args)
    panels = results.pop("_panels")
    png = confusion_grid_png(args.out.with_name(args.out.stem + "_confusion.png"), panels)
    report = {
        "benchmark": "cell_baselines",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-P", *sys.argv]),
        "runtime_s": round(time.perf_counter() - started, 1),
        "device": {"cpu": platform.processor() or platform.machine(), "blas_threads": 1},
        "versions": {
            "python": platform.python_version(),
            **{
                p: metadata.version(p)
                for p in ("numpy", "scipy", "scikit-learn", "anndata", "wensu")
            },
        },
        "settings": {
            "label_column": "cell_type_coarse",
            "n_hvg": args.n_hvg,
            "n_pcs": args.n_pcs,
            "seed": args.seed,
            "C_grid": list(DEFAULT_CS),
            "validation_fraction": 0.2,
            "normalisation": "log1p(CP10k) over the genes shared by the train and test files",
        },
        "headline_accuracy_macro_f1": _headline(results),
        **results,
        "figure": png.name,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    print(json.dumps(report["headline_accuracy_macro_f1"], indent=1))
    print(f"wrote {args.out} and {png} in {report['runtime_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
