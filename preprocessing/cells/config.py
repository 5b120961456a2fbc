"""Cells preprocessing settings: defaults from ``conf/preprocess_cells.yaml``, checked, frozen.

As for proteins, settings split into those that decide the output (the manifest's ``config``
and the resume fingerprint) and runtime knobs (paths, chunk size, progress) that never change
an output byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from ..config import SettingsBase, merge_known, packaged_yaml
from ..errors import ConfigError
from .binning import BinningConfig
from .h5ad import DUPLICATE_GENE_POLICIES, MISSING_LABEL_POLICIES, NON_INTEGER_POLICIES, ReadOptions

CONFIG_NAME = "preprocess_cells.yaml"
SPLIT_NAMES = ("train", "valid", "test")
RUNTIME_KEYS = ("input", "output", "overwrite", "chunk_cells", "progress", "keep_work")
# Mappings whose keys are data (column or dataset names), not settings.
_FREE_MAPPINGS = ("flag_columns",)


def default_cells_config() -> dict[str, Any]:
    """The packaged ``preprocess_cells.yaml`` as a plain dict (without Hydra's keys)."""
    return packaged_yaml(CONFIG_NAME)


@dataclass(frozen=True)
class CellsConfig(SettingsBase):
    """Validated cells settings; ``raw`` is the resolved mapping."""

    runtime_keys: ClassVar[tuple[str, ...]] = RUNTIME_KEYS

    @property
    def read_options(self) -> ReadOptions:
        raw = self.raw
        return ReadOptions(
            label_columns=tuple(raw["label_columns"]),
            on_missing_label=raw["on_missing_label"],
            donor_column=raw["donor_column"],
            barcode_column=raw["barcode_column"],
            symbol_columns=tuple(raw["symbol_columns"]),
            duplicate_genes=raw["duplicate_genes"],
            on_non_integer=raw["on_non_integer"],
            matrix=raw["matrix"],
        )

    @property
    def binning_config(self) -> BinningConfig:
        b = self.raw["binning"]
        return BinningConfig(
            target_sum=float(b["target_sum"]),
            num_bins=int(b["num_bins"]),
            include_zeros=bool(b["include_zeros"]),
            token_order=b["token_order"],
            max_genes=b["max_genes"],
        )


def _merge_known(base: dict, overrides: Mapping) -> dict:
    return merge_known(base, overrides, what="cells preprocessing", free=_FREE_MAPPINGS)


def _check(raw: dict) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"cells preprocessing config: {message}")

    def positive_int(value: Any, name: str, minimum: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            fail(f"{name} must be an integer >= {minimum}, got {value!r}")

    choices = {
        "on_non_integer": NON_INTEGER_POLICIES,
        "duplicate_genes": DUPLICATE_GENE_POLICIES,
        "on_missing_label": MISSING_LABEL_POLICIES,
    }
    for key, allowed in choices.items():
        if raw[key] not in allowed:
            fail(f"{key} must be one of {allowed}, got {raw[key]!r}")
    matrix = raw["matrix"]
    if not (matrix in ("X", "raw") or (isinstance(matrix, str) and matrix.startswith("layers/"))):
        fail(f"matrix must be X, raw or layers/<name>, got {matrix!r}")
    if not isinstance(raw["label_columns"], list) or not all(
        isinstance(c, str) and c for c in raw["label_columns"]
    ):
        fail(f"label_columns must be a list of obs column names, got {raw['label_columns']!r}")
    positive_int(raw["filters"]["min_genes"], "filters.min_genes", 0)
    positive_int(raw["filters"]["min_cells"], "filters.min_cells", 0)
    positive_int(raw["shard_size_cells"], "shard_size_cells")
    positive_int(raw["chunk_cells"], "chunk_cells")
    try:
        BinningConfig(**raw["binning"])
    except (TypeError, ValueError) as err:
        fail(str(err))
    fractions = [raw["split"][name] for name in SPLIT_NAMES]
    if not all(isinstance(f, int | float) and 0 <= f <= 1 for f in fractions):
        fail(f"split fractions must be in [0, 1], got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        fail(f"split fractions must sum to 1, got {dict(zip(SPLIT_NAMES, fractions, strict=True))}")
    positive_int(raw["split"]["seed"], "split.seed", 0)
    if raw["holdout"]["split"] not in SPLIT_NAMES:
        fail(f"holdout.split must be one of {SPLIT_NAMES}, got {raw['holdout']['split']!r}")
    for key in ("datasets", "donors"):
        if not isinstance(raw["holdout"][key], list):
            fail(f"holdout.{key} must be a list, got {raw['holdout'][key]!r}")
    for pair in raw["duplicates"]["label_pairs"]:
        if not isinstance(pair, dict) or set(pair) != {"keep", "drop", "column"}:
            fail(f"duplicates.label_pairs entries need keep, drop and column, got {pair!r}")
    if not raw["output"]:
        fail("output must name a directory")


def load_cells_config(
    cfg: Mapping | DictConfig | CellsConfig | None = None, **kwargs
) -> CellsConfig:
    """Defaults updated by ``cfg`` (Hydra/OmegaConf or plain mapping) and then ``kwargs``;
    unknown keys and bad values raise :class:`~wensu.preprocessing.errors.ConfigError`."""
    if isinstance(cfg, CellsConfig):
        cfg = cfg.raw
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    raw = _merge_known(default_cells_config(), dict(cfg or {}))
    raw = _merge_known(raw, kwargs)
    value = raw["input"]
    if isinstance(value, str | PathLike):
        raw["input"] = [str(value)]
    else:
        raw["input"] = [str(v) for v in value]
    raw["output"] = str(raw["output"])
    if raw["vocab"] is not None:
        raw["vocab"] = str(raw["vocab"])
    _check(raw)
    return CellsConfig(raw=json.loads(json.dumps(raw)))
