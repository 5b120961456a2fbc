"""Let a source checkout import ``wensu.conf`` and ``wensu.preprocessing`` like an install does.

setup.cfg installs the top-level ``conf/`` and ``preprocessing/`` folders as these two
subpackages. When ``wensu`` itself is imported from a checkout rather than from the install (a
subprocess or a Ray worker whose working directory is the checkout puts it first on
``sys.path``), the two subpackages must come from the same checkout instead of going missing.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.util import spec_from_file_location
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = {"wensu.conf": "conf", "wensu.preprocessing": "preprocessing"}


class SourceCheckoutFinder(MetaPathFinder):
    """Finds ``wensu.conf`` / ``wensu.preprocessing`` in the checkout ``root``."""

    def __init__(self, root: Path = ROOT):
        self.folders = {name: Path(root) / folder for name, folder in SUBPACKAGES.items()}

    def find_spec(self, fullname, path=None, target=None):
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def install() -> None:
    """Add the finder once, and only where ``wensu/`` sits in a checkout beside its folders."""
    in_checkout = (ROOT / "setup.cfg").is_file() and (
        ROOT / "preprocessing" / "__init__.py"
    ).is_file()
    if in_checkout and not any(isinstance(f, SourceCheckoutFinder) for f in sys.meta_path):
        sys.meta_path.append(SourceCheckoutFinder())
