"""Where the data sets live: ``data_dir=`` (option) → ``$WENSU_DATA`` → a per-user cache
(``~/.cache/wensu/data`` on Linux, the platform's cache folder elsewhere), and the embedded
evaluation sample inside the package for quick runs with nothing configured."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from wensu.datasets.fetch import fetch_set
from wensu.datasets.registry import DataSet, data_set

ENV_DATA = "WENSU_DATA"
ENV_OFFLINE = "WENSU_OFFLINE"  # 1/true: never touch the network
SAMPLE_PACKAGE = "wensu.resources"
SAMPLE_FOLDER = "eval_sample"
SAMPLE_MANIFEST = "SAMPLE.json"


class DataNotFound(RuntimeError):
    """A data set is neither on disk nor fetchable; the message says how to get it."""


@dataclass(frozen=True)
class Located:
    root: Path  # the data directory holding the set's folders
    origin: str  # "data_dir" | "sample" | "fetched"

    @property
    def is_sample(self) -> bool:
        return self.origin == "sample"


def cache_dir() -> Path:
    """The per-user cache (platformdirs), e.g. ``~/.cache/wensu/data``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("wensu", appauthor=False)) / "data"


def data_root(option: str | os.PathLike | None = None) -> Path:
    """``option`` → ``$WENSU_DATA`` → the per-user cache."""
    if option:
        return Path(option).expanduser()
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA]).expanduser()
    return cache_dir()


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes")


def missing_files(data: DataSet, root: Path) -> list[str]:
    """Files of ``data`` absent from ``root`` (existence and size; ``wensu-data verify`` hashes)."""
    missing = []
    for f in data.files:
        path = root / f.path
        if not path.is_file() or path.stat().st_size != f.size:
            missing.append(f.path)
    return missing


def sample_root() -> Path:
    """The embedded evaluation sample (a small cut of several sets, in the same layout)."""
    return Path(str(resources.files(SAMPLE_PACKAGE).joinpath(SAMPLE_FOLDER)))


def sample_sets() -> dict[str, dict]:
    """Sets the embedded sample covers, with what it holds of each (SAMPLE.json)."""
    manifest = sample_root() / SAMPLE_MANIFEST
    return json.loads(manifest.read_text())["sets"] if manifest.is_file() else {}


def how_to_get(name: str, root: Path) -> str:
    data = data_set(name)
    return (
        f"data set '{name}' ({len(data.files)} files, {data.size / 1e6:.1f} MB) is not in {root}; "
        f"run `wensu-data fetch {name}` (or set data_dir= / $WENSU_DATA to a folder holding it; "
        f"offline: place the files listed by `wensu-data list {name} --files` under that folder)"
    )


def locate(
    name: str,
    option: str | os.PathLike | None = None,
    *,
    allow_sample: bool = False,
    allow_fetch: bool = True,
) -> Located:
    """The data directory holding set ``name``.

    Found in the data directory → used. Otherwise, when ``allow_sample`` and the embedded sample
    covers the set → the sample (no network). Otherwise fetched into the data directory, unless
    fetching is forbidden (``allow_fetch=False`` or ``$WENSU_OFFLINE``): then :class:`DataNotFound`
    with the command to run.
    """
    data = data_set(name)
    root = data_root(option)
    if not missing_files(data, root):
        return Located(root, "data_dir")
    if allow_sample and name in sample_sets():
        return Located(sample_root(), "sample")
    if not allow_fetch or offline():
        raise DataNotFound(how_to_get(name, root))

    fetch_set(name, root)
    return Located(root, "fetched")
