"""The registry of built-in data sets (``registry.json`` beside this module).

Every file has the path it takes under the data directory, the SHA-256 and size of the file as
stored there, and — where it is a verbatim (or verbatim, then gzipped) copy of a public file —
the URL of that file at a pinned commit with the SHA-256 of the downloaded bytes and the step
that turns the download into the stored file. Files that wensu derived (DSSP labels, parsed
backbones, labelled tables, AnnData conversions) have no upstream URL: they come from a mirror of
the layout (``wensu-data fetch --mirror URL``) or are placed by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

REGISTRY_NAME = "registry.json"
PREPARE_STEPS = ("copy", "gzip")  # gzip: the download is stored gzip-compressed (mtime 0)


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory
    sha256: str  # of the file as stored
    size: int
    url: str | None = None  # public source of the bytes (pinned commit), when not derived
    source_sha256: str | None = None  # of the downloaded bytes
    prepare: str = "copy"  # how the download becomes the stored file (PREPARE_STEPS)


@dataclass(frozen=True)
class DataSet:
    name: str
    description: str
    licence: str
    source: str  # provenance in one line (repositories, commits, papers)
    folders: tuple[str, ...]  # top-level folders under the data directory this set fills
    files: tuple[DataFile, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def derived_files(self) -> int:
        return sum(1 for f in self.files if f.url is None)


def _data_set(entry: dict[str, Any]) -> DataSet:
    files = tuple(DataFile(**f) for f in entry.pop("files"))
    return DataSet(**{**entry, "folders": tuple(entry["folders"]), "files": files})


@cache
def load_registry() -> dict[str, DataSet]:
    """All built-in sets by name."""
    text = resources.files(__package__).joinpath(REGISTRY_NAME).read_text()
    return {e["name"]: _data_set(dict(e)) for e in json.loads(text)["sets"]}


def data_set(name: str) -> DataSet:
    """The set called ``name``, or a one-line error listing the known names."""
    sets = load_registry()
    if name not in sets:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(sets))}")
    return sets[name]
