"""The preprocessing settings: defaults from ``conf/preprocess.yaml``, checked once, frozen.

Settings split in two: those that decide the output (stored in the manifest's ``config`` and in
the resume fingerprint) and runtime knobs (workers, progress, paths, downloads) that must not
change a single output byte, so they are left out of the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from typing import Any, ClassVar

import yaml
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

CONFIG_NAME = "preprocess.yaml"
LONG_POLICIES = ("drop", "crop", "split")
TRUNCATED_POLICIES = ("error", "keep")
SPLIT_NAMES = ("train", "valid", "test")
# Knobs that change how a run goes, never what it writes.
RUNTIME_KEYS = ("input", "output", "overwrite", "num_workers", "progress", "keep_work", "download",
                "memory_limit", "executor", "ray")  # fmt: skip
EXECUTORS = ("local", "ray")
_HYDRA_KEYS = ("defaults", "hydra")


def packaged_yaml(name: str) -> dict[str, Any]:
    """A YAML file of ``wensu.conf`` as a plain dict (without Hydra's own keys)."""
    text = resources.files("wensu.conf").joinpath(name).read_text(encoding="utf-8")
    # libyaml's parser when present: half the time of OmegaConf's pure-Python YAML loading.
    parsed = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    data = OmegaConf.to_container(OmegaConf.create(parsed), resolve=True)
    return {k: v for k, v in data.items() if k not in _HYDRA_KEYS}


def default_config() -> dict[str, Any]:
    """The packaged ``preprocess.yaml`` as a plain dict (without Hydra's own keys)."""
    return packaged_yaml(CONFIG_NAME)


@dataclass(frozen=True)
class SettingsBase:
    """Validated settings; ``raw`` is the full resolved mapping, :meth:`output_config` the part
    that determines the output (everything but ``runtime_keys``)."""

    raw: dict[str, Any]
    runtime_keys: ClassVar[tuple[str, ...]] = RUNTIME_KEYS

    def __getattr__(self, name: str) -> Any:
        raw = object.__getattribute__(self, "raw")
        if name in raw:
            return raw[name]
        raise AttributeError(name)

    @property
    def inputs(self) -> list[str]:
        value = self.raw["input"]
        return [value] if isinstance(value, str) else [str(v) for v in value]

    def _output_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in self.runtime_keys}

    def output_config(self) -> dict[str, Any]:
        """Settings that decide the output bytes (the manifest's ``config``)."""
        return json.loads(json.dumps(self._output_settings(), sort_keys=True))

    def fingerprint(self, inputs: list[dict]) -> str:
        """SHA-256 over the output settings and the inputs' paths, sizes and hashes."""
        blob = json.dumps({"config": self.output_config(), "inputs": inputs}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class PreprocessConfig(SettingsBase):
    """Protein preprocessing settings (conf/preprocess.yaml)."""

    @property
    def split_fractions(self) -> dict[str, float]:
        return {name: float(self.raw["split"][name]) for name in SPLIT_NAMES}

    def _output_settings(self) -> dict[str, Any]:
        out = super()._output_settings()
        out["cluster"] = {k: v for k, v in out["cluster"].items() if k != "mmseqs"}
        return out


def merge_known(
    base: dict, overrides: Mapping, *, what: str, free: tuple[str, ...] = (), prefix: str = ""
) -> dict:
    """``base`` updated by ``overrides`` (nested); a key ``base`` lacks is a ConfigError naming
    ``what`` settings. Mappings named in ``free`` hold data keys and are replaced whole."""
    out = dict(base)
    for key, value in overrides.items():
        if key in _HYDRA_KEYS and not prefix:
            continue
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown {what} setting {prefix + key!r} (known: {known})")
        if isinstance(base[key], dict) and isinstance(value, Mapping) and key not in free:
            out[key] = merge_known(
                base[key], value, what=what, free=free, prefix=prefix + key + "."
            )
        else:
            out[key] = value
    return out


def _merge_known(base: dict, overrides: Mapping) -> dict:
    return merge_known(base, overrides, what="preprocessing", free=("sha256",))


def _check(raw: dict) -> None:
    def fail(message: str) -> None:
        raise ConfigError(f"preprocessing config: {message}")

    if not isinstance(raw["num_workers"], int) or raw["num_workers"] < 1:
        fail(f"num_workers must be an integer >= 1, got {raw['num_workers']!r}")
    if not isinstance(raw["min_length"], int) or raw["min_length"] < 1:
        fail(f"min_length must be an integer >= 1, got {raw['min_length']!r}")
    max_length = raw["max_length"]
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        fail(f"max_length must be null or an integer >= 1, got {max_length!r}")
    if max_length is not None and max_length < raw["min_length"]:
        fail(f"max_length ({max_length}) is below min_length ({raw['min_length']})")
    if raw["long_policy"] not in LONG_POLICIES:
        fail(f"long_policy must be one of {LONG_POLICIES}, got {raw['long_policy']!r}")
    if raw["executor"] not in EXECUTORS:
        fail(f"executor must be one of {EXECUTORS}, got {raw['executor']!r}")
    if raw["on_truncated"] not in TRUNCATED_POLICIES:
        fail(f"on_truncated must be one of {TRUNCATED_POLICIES}, got {raw['on_truncated']!r}")
    if not isinstance(raw["shard_size_records"], int) or raw["shard_size_records"] < 1:
        fail(f"shard_size_records must be an integer >= 1, got {raw['shard_size_records']!r}")
    if not isinstance(raw["chunk_bytes"], int) or raw["chunk_bytes"] < 4096:
        fail(f"chunk_bytes must be an integer >= 4096, got {raw['chunk_bytes']!r}")
    fractions = []
    for name in SPLIT_NAMES:
        value = raw["split"][name]
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            fail(f"split.{name} must be a fraction in [0, 1], got {value!r}")
        fractions.append(float(value))
    if abs(sum(fractions) - 1.0) > 1e-9:
        fail(f"split fractions must sum to 1, got {dict(zip(SPLIT_NAMES, fractions, strict=True))}")
    if not isinstance(raw["split"]["seed"], int):
        fail(f"split.seed must be an integer, got {raw['split']['seed']!r}")
    cluster = raw["cluster"]
    for key in ("min_seq_id", "coverage"):
        if not isinstance(cluster[key], int | float) or not 0 <= cluster[key] <= 1:
            fail(f"cluster.{key} must be in [0, 1], got {cluster[key]!r}")
    if cluster["cov_mode"] not in (0, 1, 2, 3, 4, 5):
        fail(f"cluster.cov_mode must be an MMseqs2 coverage mode 0-5, got {cluster['cov_mode']!r}")
    if not isinstance(raw["input"], str | list) or not isinstance(raw["output"], str):
        fail(f"input must be a path, URL or a list of them, got {raw['input']!r}")
    if not raw["output"]:
        fail("output must name a directory")


def load_config(
    cfg: Mapping | DictConfig | PreprocessConfig | None = None, **kwargs
) -> PreprocessConfig:
    """Defaults from ``preprocess.yaml`` updated by ``cfg`` (a Hydra/OmegaConf or plain mapping)
    and then ``kwargs``; unknown keys and out-of-range values raise :class:`ConfigError`."""
    if isinstance(cfg, PreprocessConfig):
        cfg = cfg.raw
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    raw = _merge_known(default_config(), dict(cfg or {}))
    raw = _merge_known(raw, kwargs)
    value = raw["input"]
    raw["input"] = [str(v) for v in value] if isinstance(value, list | tuple) else value
    if isinstance(raw["input"], PathLike):
        raw["input"] = [str(raw["input"])]
    raw["output"] = str(raw["output"])
    _check(raw)
    from .memory import check_parse_memory, parse_size

    raw["memory_limit"] = parse_size(raw["memory_limit"])
    check_parse_memory(raw["memory_limit"], raw["chunk_bytes"])
    return PreprocessConfig(raw=json.loads(json.dumps(raw)))
