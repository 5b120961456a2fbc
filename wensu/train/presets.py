"""Conflicts between a group picked on the command line and an experiment preset.

``wensu-train model=wensu_1b experiment=quickstart`` selects the 1B model file, then the
experiment's own ``model:`` keys (4 layers of 128) are merged on top: Hydra trains a 0.8 M model
without a word. Here every key the experiment sets inside a group that the user chose explicitly
is compared with the chosen file; a difference the user did not also override key by key is a
one-line error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import yaml

from wensu.train.errors import TrainConfigError

# Groups that decide what is trained, and where their keys live in the config.
CHECKED_GROUPS = {"model": "model", "attention@model.attention": "model.attention"}
NESTED = {"model": ("attention",)}  # sub-keys of a group that belong to another group


def _load(relative: str) -> dict[str, Any]:
    resource = files("wensu.conf").joinpath(relative)
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    except (FileNotFoundError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key != "defaults":
                out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _subtree(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node


def _preset_choice(preset: Mapping[str, Any], group: str) -> str | None:
    """The option the preset picks for ``group`` (``- override /model: tiny``)."""
    for entry in preset.get("defaults") or []:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                if str(key).removeprefix("override ").lstrip("/") == group:
                    return str(value)
    return None


def _command_line(overrides: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """Group choices (``model=x``) and the dotted keys set (``model.d_model=64``)."""
    groups, keys = {}, set()
    for item in overrides:
        name, _, value = item.lstrip("+~").partition("=")
        if name in CHECKED_GROUPS or name == "experiment":
            groups[name] = value
        else:
            keys.add(name)
    return groups, keys


def check_preset_conflicts(overrides: Sequence[str]) -> None:
    """Raise when an explicit group choice is silently reshaped by ``experiment=...``."""
    groups, keys = _command_line(overrides)
    experiment = groups.get("experiment")
    if not experiment:
        return
    preset = _load(f"experiment/{experiment}.yaml")
    for group, path in CHECKED_GROUPS.items():
        choice = groups.get(group)
        if not choice or choice == _preset_choice(preset, group):
            continue  # the preset tunes its own pick of this group: intended
        directory = group.split("@")[0]
        chosen = _flat(_load(f"{directory}/{choice}.yaml"))
        nested = NESTED.get(group, ())
        set_by_preset = {
            key: value
            for key, value in _flat(_subtree(preset, path)).items()
            if key.split(".")[0] not in nested and f"{path}.{key}" not in keys
        }
        differing = [
            f"{path}.{key}={value} ({choice}: {chosen.get(key, 'unset')})"
            for key, value in set_by_preset.items()
            if chosen.get(key, object()) != value
        ]
        if differing:
            more = f" and {len(differing) - 1} more" if len(differing) > 1 else ""
            raise TrainConfigError(
                f"{group}={choice} conflicts with experiment={experiment}, which sets "
                f"{differing[0]}{more}: drop {group}={choice} to train the experiment's model, "
                f"or drop experiment={experiment}"
            )
