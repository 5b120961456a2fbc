"""The secondary-structure probe: SS3 trained on FLIP NetSurfP-2.0 train (early-stopped on its
validation split), SS8 trained on ICML-2014 CullPDB (a fixed 10% of it, by sequence hash, for
early stopping); both tested on NetSurfP CB513/TS115/CASP12, DNSS2 CASP11/12 and (SS3 only)
FLIP NEW364, or on user files (``test_sets`` entries that are paths; see
:mod:`wensu.probes.ss.user_sets`). Training and validation chains that equal, contain or are
contained in (>= 30 residues) any test chain are removed first.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wensu.probes.common import report
from wensu.probes.common.baselines import one_hot
from wensu.probes.common.context import EvalContext, ProbeResult, stable_subset
from wensu.probes.common.features import EncoderFeatures
from wensu.probes.common.inputs import resolve_entries
from wensu.probes.common.overlap import overlapping_mask
from wensu.probes.ss.data import (
    SS3_CLASSES,
    SS8_CLASSES,
    SSRecord,
    read_cullpdb_csv,
    read_dnss2,
    read_flip_ss,
    read_netsurfp_csv,
)
from wensu.probes.ss.probe import (
    ProbeData,
    ProbeSettings,
    accuracy,
    per_class_f1,
    predict,
    train_probe,
)
from wensu.probes.ss.user_sets import SS_SUFFIXES, load_user_ss_set

SS_DIR = "structure/secondary_structure"
FLIP_ZIP = "flip_prott5/secondary_structure_splits.zip"
CULLPDB_CSV = "icml2014_cullpdb_kaggle_mirror/cullpdb6133filtered_train.csv.gz"
TEST_SETS: dict[str, tuple[str, str]] = {
    "cb513": ("CB513", "netsurfp2_prottrans/CB513_HHblits.csv.gz"),
    "ts115": ("TS115", "netsurfp2_prottrans/TS115_HHblits.csv.gz"),
    "casp12": ("CASP12", "netsurfp2_prottrans/CASP12_HHblits.csv.gz"),
    "dnss2_casp11": ("DNSS2-CASP11", "dnss2_casp/CASP11"),
    "dnss2_casp12": ("DNSS2-CASP12", "dnss2_casp/CASP12"),
    "new364": ("NEW364", FLIP_ZIP),
}
ONE_HOT = "one-hot"


def _load_test(name: str, root: Path) -> tuple[list[SSRecord], Path]:
    if name not in TEST_SETS:
        raise ValueError(f"unknown SS test set {name!r}; known: {sorted(TEST_SETS)}")
    path = root / TEST_SETS[name][1]
    if name.startswith("dnss2"):
        return read_dnss2(path), path / "seq_labels.tar.gz"
    if name == "new364":
        return read_flip_ss(path)["test"], path
    return read_netsurfp_csv(path, name=TEST_SETS[name][0]), path


def _load_tests(
    entries: list[str], root: Path, result: ProbeResult
) -> tuple[dict[str, list[SSRecord]], dict[str, str]]:
    """{set name: records} and {set name: report label} of built-in names and user paths."""
    tests: dict[str, list[SSRecord]] = {}
    display: dict[str, str] = {}
    resolved = resolve_entries(entries, TEST_SETS, SS_SUFFIXES, where="probe.ss.test_sets")
    for item in resolved:
        if isinstance(item, str):
            tests[item], path = _load_test(item, root)
            display[item] = TEST_SETS[item][0]
            result.inputs.append(path)
            continue
        loaded = load_user_ss_set(item)
        tests[item.name], display[item.name] = loaded.records, item.name
        result.inputs += loaded.files
        result.details.setdefault("structures", {})[item.name] = {
            "entry": item.entry,
            "evaluated": len(loaded.records),
            "skipped": dict(loaded.skipped),
            "errors": loaded.errors,
        }
    return tests, display


def _split_cullpdb(records: list[SSRecord], valid_fraction: float) -> tuple[list, list]:
    """Fixed validation split by sequence hash, so duplicate chains stay on one side."""
    cut = int(valid_fraction * 1000)
    is_valid = [zlib.crc32(r.sequence.encode()) % 1000 < cut for r in records]
    train = [r for r, v in zip(records, is_valid, strict=True) if not v]
    valid = [r for r, v in zip(records, is_valid, strict=True) if v]
    return train, valid


def _without_test(records: list[SSRecord], test_sequences: set[str]) -> tuple[list[SSRecord], dict]:
    flags, counts = overlapping_mask([r.sequence for r in records], test_sequences)
    kept = [r for r, drop in zip(records, flags, strict=True) if not drop]
    return kept, {"exact": counts.exact, "substring": counts.substring}


def _featurizer(source: EncoderFeatures | None) -> Callable[[list[str], str], list[np.ndarray]]:
    if source is None:
        return lambda seqs, desc: [one_hot(s) for s in seqs]
    return source.per_residue


def _probe_data(featurize, records: list[SSRecord], states: int, desc: str) -> ProbeData:
    features = featurize([r.sequence for r in records], desc)
    return ProbeData(features, [r.labels(states) for r in records])


def _training_splits(root: Path, cfg: dict, tests: dict, result: ProbeResult) -> dict[int, tuple]:
    """{3: (train, valid), 8: (train, valid)} without test overlaps, capped as configured."""
    test_sequences = {r.sequence for records in tests.values() for r in records}
    flip = read_flip_ss(root / FLIP_ZIP)
    cullpdb = read_cullpdb_csv(root / CULLPDB_CSV)
    result.inputs += [root / FLIP_ZIP, root / CULLPDB_CSV]
    raw = {3: (flip["train"], flip["valid"]), 8: _split_cullpdb(cullpdb, cfg["ss8_valid_fraction"])}
    splits, removed, sizes = {}, {}, {}
    for states, (train, valid) in raw.items():
        train, removed[f"ss{states}_train"] = _without_test(train, test_sequences)
        valid, removed[f"ss{states}_valid"] = _without_test(valid, test_sequences)
        train = stable_subset(train, cfg["max_train"], key=lambda r: r.id)
        valid = stable_subset(valid, cfg["max_valid"], key=lambda r: r.id)
        splits[states] = (train, valid)
        sizes[f"ss{states}"] = {"train": len(train), "valid": len(valid)}
    result.details["removed_for_test_overlap"] = removed
    result.details["training_sizes"] = sizes
    return splits


def _add_rows(result: ProbeResult, scores: dict, per_class_set: str, display: dict) -> None:
    for (states, test_name, head), by_feature in sorted(scores.items()):
        task = f"SS{states} {display[test_name]}"
        result.add_row(task, f"Q{states}", {f: v["accuracy"] for f, v in by_feature.items()}, head)
        if test_name == per_class_set:
            for cls in SS3_CLASSES if states == 3 else SS8_CLASSES:
                values = {f: v["per_class_f1"][cls] for f, v in by_feature.items()}
                result.add_row(task, f"F1 {cls}", values, head=head)


def run_ss(ctx: EvalContext, cfg: dict[str, Any]) -> ProbeResult:
    """Train and test the SS3/SS8 linear and conv heads for the model and its baselines."""
    result = ProbeResult("ss")
    root = ctx.data_dir / SS_DIR
    tests, display = _load_tests(cfg["test_sets"], root, result)
    result.details["test_sizes"] = {n: len(r) for n, r in tests.items()}
    splits = _training_splits(root, cfg, tests, result)
    settings = ProbeSettings(**{**cfg["training"], "seed": ctx.seed})
    sources = [(e.name, e) for e in ctx.encoders] + [(ONE_HOT, None)]
    scores: dict[tuple[int, str, str], dict[str, dict]] = {}
    histories: dict[str, Any] = {}
    all_test = sorted({r.sequence for records in tests.values() for r in records})
    for feature_name, source in sources:
        featurize = _featurizer(source)
        test_table = dict(zip(all_test, featurize(all_test, "SS test"), strict=True))
        for states, (train, valid) in splits.items():
            classes = SS3_CLASSES if states == 3 else SS8_CLASSES
            train_data = _probe_data(featurize, train, states, f"SS{states} train")
            valid_data = _probe_data(featurize, valid, states, f"SS{states} valid")
            for head in cfg["heads"]:
                probe = train_probe(head, train_data, valid_data, states, settings)
                histories[f"ss{states}/{head}/{feature_name}"] = probe.history
                for test_name, records in tests.items():
                    if any((r.ss3 if states == 3 else r.ss8) is None for r in records):
                        continue  # NEW364 has no 8-state labels
                    test_data = ProbeData(
                        [test_table[r.sequence] for r in records],
                        [r.labels(states) for r in records],
                    )
                    predictions = predict(probe, test_data, settings.batch_residues)
                    scores.setdefault((states, test_name, head), {})[feature_name] = {
                        "accuracy": accuracy(predictions, test_data.labels),
                        "per_class_f1": per_class_f1(predictions, test_data.labels, classes),
                        "residues": int(sum((y != -100).sum() for y in test_data.labels)),
                    }
            del train_data, valid_data
    result.details["training_history"] = histories
    result.details["scores"] = {f"SS{s} {display[t]} {h}": v for (s, t, h), v in scores.items()}
    _add_rows(result, scores, cfg["per_class_table_set"], display)
    figure = ctx.output_dir / "ss" / "accuracy.png"
    result.figures.append(report.ss_accuracy_png(figure, scores, display))
    result.notes.append(
        "Q3/Q8 and per-class F1 pooled over scored residues (NetSurfP: disorder==1 and CB513 "
        "mask; FLIP: resolved mask; CullPDB/DNSS2: all residues; user files: labelled residues, "
        "DSSP-assigned residues of structures). Training/validation chains "
        "equal to, containing or inside (>= 30 residues) a test chain removed: "
        f"{result.details['removed_for_test_overlap']}. Features standardised on the training "
        f"set; layer {ctx.encoders[0].layer} of the encoders."
    )
    return result
