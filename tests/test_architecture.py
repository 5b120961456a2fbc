"""The import graph of wensu keeps the shape docs/architecture.md draws.

Every module of ``wensu/`` (plus ``preprocessing/`` and ``conf/``, installed as
``wensu.preprocessing``/``wensu.conf``) is parsed with :mod:`ast`; each import of a wensu module,
at module level or inside a function, is an arrow. The test fails on an import circle between
modules and on an arrow the architecture forbids, naming the file and line.
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the package name it installs as (setup.cfg package_dir).
SOURCES = {"wensu": "wensu", "preprocessing": "wensu.preprocessing", "conf": "wensu.conf"}

# (importer prefix, imported prefix): the importer may not import the imported part.
FORBIDDEN = [
    # The model is pure torch: it never reads files, data sets or checkpoints, nor knows who
    # trains, embeds or probes it.
    *[("wensu.model", f"wensu.{part}") for part in ("checkpoint", "data", "train", "probes")],
    ("wensu.model", "wensu.embed"),
    ("wensu.model", "wensu.preprocessing"),
    # Probes evaluate frozen models; they never train one with the training stack.
    ("wensu.probes", "wensu.train"),
    # Training, embedding and the ESM-2 converters do not know about each other or the probes.
    *[("wensu.train", f"wensu.{part}") for part in ("probes", "embed")],
    *[("wensu.embed", f"wensu.{part}") for part in ("probes", "train")],
    *[("wensu.interop", f"wensu.{p}") for p in ("checkpoint", "data", "train", "probes", "embed")],
    # Data reading sits below the model and everything that uses it.
    *[("wensu.data", f"wensu.{part}") for part in ("model", "train", "probes", "embed")],
    # Checkpoints and the vocabularies are read by everyone; they import none of the users.
    *[("wensu.checkpoint", f"wensu.{p}") for p in ("train", "probes", "embed", "preprocessing")],
    *[("wensu.cell_vocab", f"wensu.{p}") for p in ("data", "model", "train", "probes", "embed")],
    # Leaves: the vocabularies sit under everything; atomic writes under them.
    *[(leaf, "wensu") for leaf in ("wensu.alphabet", "wensu.atomic", "wensu.hydra_app")],
]
# Only command-line entry modules may reach into preprocessing (a client of the package).
PREPROCESSING = "wensu.preprocessing"
CLI_ENTRY_MODULES = {"wensu.train.cli", "wensu.probes.cli", "wensu.embed.cli"}

# Known arrows that break a rule and are not fixed yet; each names why. Remove an entry once
# the arrow is gone (work in flight may remove it first, so a missing arrow does not fail).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

# Import circles not broken yet: a circle whose modules all lie in one of these sets.
KNOWN_CIRCLES: list[set[str]] = []


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    where: str  # path:line


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _arrows(modules: dict[str, Path]) -> Iterator[Arrow]:
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module, is_package)
                # "from pkg import mod" imports the module pkg.mod when there is one.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:  # "import wensu.x.y" of a name
                    target = target.rpartition(".")[0]
                if target.startswith("wensu") and target != module:
                    yield Arrow(module, target, f"{path.relative_to(ROOT)}:{node.lineno}")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _circles(arrows: list[Arrow]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for arrow in arrows:
        graph.setdefault(arrow.source, set()).add(arrow.target)
        graph.setdefault(arrow.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def arrows() -> list[Arrow]:
    return list(_arrows(_modules()))


def test_the_graph_is_read(arrows):
    """Guard against a vacuous pass: the parser sees the package and its known arrows."""
    modules = _modules()
    assert len(modules) > 100
    pairs = {(a.source, a.target) for a in arrows}
    assert ("wensu.checkpoint", "wensu.model") in pairs
    assert ("wensu.probes.cli", "wensu.probes.cells.context") in pairs
    assert ("wensu.preprocessing.cells.vocab", "wensu.cell_vocab") in pairs
    assert (
        "wensu.preprocessing.cells.writer",
        "wensu.preprocessing.cells.binning",
    ) in pairs  # relative


def test_no_import_circles(arrows):
    circles = _circles(arrows)
    new = [sorted(c) for c in circles if not any(c <= known for known in KNOWN_CIRCLES)]
    assert not new, f"import circles between wensu modules: {new}"


def test_no_forbidden_arrows(arrows):
    broken = []
    for arrow in arrows:
        pair = (arrow.source, arrow.target)
        bad = [
            f"{importer} -> {imported}"
            for importer, imported in FORBIDDEN
            if _within(arrow.source, importer)
            and _within(arrow.target, imported)
            and not _within(arrow.target, importer)
        ]
        if (
            _within(arrow.target, PREPROCESSING)
            and not _within(arrow.source, PREPROCESSING)
            and arrow.source not in CLI_ENTRY_MODULES
        ):
            bad.append(f"only CLI entry modules import {PREPROCESSING}")
        if bad and pair not in KNOWN_VIOLATIONS:
            broken.append(f"{arrow.where}: {arrow.source} -> {arrow.target} ({'; '.join(bad)})")
    assert not broken, "forbidden imports:\n" + "\n".join(broken)


def test_the_rules_catch_a_violation():
    """The checks themselves: a made-up model -> checkpoint arrow and a circle are found."""
    fake = [
        Arrow("wensu.model.encoder", "wensu.checkpoint", "x:1"),
        Arrow("wensu.checkpoint", "wensu.model.encoder", "x:2"),
    ]
    assert _circles(fake) == [frozenset({"wensu.model.encoder", "wensu.checkpoint"})]
    assert any(_within(fake[0].source, a) and _within(fake[0].target, b) for a, b in FORBIDDEN)


# Every checkpoint (and any other .pt file) is read by wensu.checkpoint.read_checkpoint
# (weights_only=True, mmap=True); interop/files.py reads fair-esm files, which need an extra
# safe global (argparse.Namespace).
TORCH_LOAD_FILES = {"wensu/checkpoint.py", "wensu/interop/files.py"}


def _calls_torch_load(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_only_the_checkpoint_module_calls_torch_load():
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "wensu").rglob("*.py"))
        if (lines := _calls_torch_load(path))
    }
    assert "wensu/checkpoint.py" in found  # the rule is not vacuous
    stray = {f: lines for f, lines in found.items() if f not in TORCH_LOAD_FILES}
    assert not stray, f"torch.load outside wensu/checkpoint.py (use read_checkpoint): {stray}"


def test_every_package_folder_is_installed():
    """setup.cfg lists packages by hand (conf/ and preprocessing/ are remapped): a new folder
    that is missing there is left out of a real (non-editable) install."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = set(setup["options"]["packages"].split())
    folders = {
        ".".join([SOURCES[folder], *init.parent.relative_to(ROOT / folder).parts])
        for folder in ("wensu", "preprocessing")
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert folders - listed == set(), f"add to setup.cfg packages: {sorted(folders - listed)}"
