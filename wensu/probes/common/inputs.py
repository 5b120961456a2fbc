"""User data sets for the probes: every ``test_sets`` / ``sets`` / ``train_set`` entry is either a
built-in set name or a path, resolved here the same way for every probe.

A path entry is one of

* a file (``casp15.csv``, ``1abc.cif.gz``);
* a folder: its files with a format the probe reads, sorted by name (not recursive);
* a glob (``structures/*.pdb``), matched from the working directory;
* a list file (``.txt`` or ``.list``): one path per line, relative to the list file; blank lines
  and ``#`` comments are ignored.

A file may carry a selector after a colon, ``1abc.cif:A`` (the chain of a structure, DSSP or
backbone file); on a folder or glob it applies to every file. The set is named by the file's
stem (``casp15.csv`` -> ``casp15``), the folder's name, the list file's stem, or the glob's
folder name; two entries with the same name are an error.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from wensu.probes.common.errors import ProbeDataError

LIST_SUFFIXES = (".txt", ".list")
_SELECTOR = re.compile(r"^(?P<path>.+?):(?P<selector>[A-Za-z0-9]{1,4})$")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file of a user set and its optional selector (chain id)."""

    path: Path
    selector: str | None = None

    @property
    def stem(self) -> str:
        return file_stem(self.path)

    def __str__(self) -> str:
        return f"{self.path}:{self.selector}" if self.selector else str(self.path)


@dataclass(frozen=True)
class UserSet:
    """A set of user files named after its entry (file stem, folder name or list-file stem)."""

    name: str
    entry: str
    files: tuple[InputFile, ...]


def file_stem(path: Path | str) -> str:
    """``casp15.csv`` -> ``casp15``; ``1abc.cif.gz`` -> ``1abc``."""
    name = Path(path).name
    name = name[:-3] if name.lower().endswith(".gz") else name
    return Path(name).stem or name


def has_suffix(path: Path | str, suffixes: Collection[str]) -> bool:
    """Whether the name (``.gz`` ignored, case-insensitive) ends with one of ``suffixes``."""
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return any(name.endswith(s) for s in suffixes)


def split_selector(text: str) -> tuple[str, str | None]:
    """``1abc.cif:A`` -> (``1abc.cif``, ``A``); a path that exists as written keeps its colon."""
    match = _SELECTOR.match(text)
    if match is None or Path(text).exists():
        return text, None
    return match["path"], match["selector"]


def _folder_files(folder: Path, suffixes: Collection[str], where: str) -> list[Path]:
    found = sorted(p for p in folder.iterdir() if p.is_file() and has_suffix(p, suffixes))
    if not found:
        raise ProbeDataError(
            f"{where}: folder {folder} holds no {'/'.join(suffixes)} files (.gz allowed)"
        )
    return found


def _list_file(path: Path, suffixes: Collection[str], where: str) -> list[InputFile]:
    files = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name, selector = split_selector(text)
        target = Path(name).expanduser()
        target = target if target.is_absolute() else path.parent / target
        if not target.is_file():
            raise ProbeDataError(f"{where}: {path} line {number}: no such file {target}")
        _check_format(target, suffixes, f"{where}: {path} line {number}")
        files.append(InputFile(target, selector))
    if not files:
        raise ProbeDataError(f"{where}: list file {path} names no files")
    return files


def _check_format(path: Path, suffixes: Collection[str], where: str) -> None:
    if not has_suffix(path, suffixes):
        raise ProbeDataError(
            f"{where}: {path} is not a format this probe reads "
            f"({', '.join(suffixes)}; optionally .gz)"
        )


def resolve_user_set(
    entry: str, suffixes: Collection[str], *, where: str, builtins: Collection[str] = ()
) -> UserSet:
    """The files of one path entry (see the module docstring); ``where`` names the option."""
    text, selector = split_selector(str(entry).strip())
    where = f"{where} entry {entry!r}"
    if _GLOB_CHARS & set(text):
        matches = [Path(p) for p in sorted(glob.glob(str(Path(text).expanduser())))]
        paths = [p for p in matches if p.is_file() and has_suffix(p, suffixes)]
        if not paths:
            raise ProbeDataError(f"{where}: the pattern matches no {'/'.join(suffixes)} files")
        name = Path(text).parent.name or file_stem(text.replace("*", "all"))
        return UserSet(name, entry, tuple(InputFile(p, selector) for p in paths))
    path = Path(text).expanduser()
    if path.is_dir():
        files = [InputFile(p, selector) for p in _folder_files(path, suffixes, where)]
        return UserSet(path.resolve().name, entry, tuple(files))
    if path.is_file() and has_suffix(path, LIST_SUFFIXES) and not has_suffix(path, suffixes):
        return UserSet(file_stem(path), entry, tuple(_list_file(path, suffixes, where)))
    if path.is_file():
        _check_format(path, suffixes, where)
        return UserSet(file_stem(path), entry, (InputFile(path, selector),))
    known = f"not a built-in set ({', '.join(sorted(builtins))}) and " if builtins else ""
    raise ProbeDataError(f"{where}: {known}no such file, folder or pattern ({path.resolve()})")


def resolve_entries(
    entries: Sequence[str] | None,
    builtins: Collection[str],
    suffixes: Collection[str],
    *,
    where: str,
) -> list[str | UserSet]:
    """Each entry as its built-in name (a ``str``, unchanged) or a :class:`UserSet`.

    A built-in name wins over a file of that name in the working directory. Set names must be
    unique: the report and metrics.json key results by them.
    """
    resolved: list[str | UserSet] = []
    seen: dict[str, str] = {}
    for entry in entries or []:
        entry = str(entry)
        item = (
            entry
            if entry in builtins
            else resolve_user_set(entry, suffixes, where=where, builtins=builtins)
        )
        name = item if isinstance(item, str) else item.name
        if name in seen:
            raise ProbeDataError(
                f"{where}: entries {seen[name]!r} and {entry!r} are both named {name!r} "
                "(sets are named by file stem or folder name; rename one)"
            )
        seen[name] = entry
        resolved.append(item)
    return resolved


def set_name(item: str | UserSet) -> str:
    """The report name of a resolved entry."""
    return item if isinstance(item, str) else item.name
