"""wensu: long-context protein language models (ESM-2 compatible), Lightning + Hydra."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wensu import source_checkout
from wensu.alphabet import Alphabet, get_alphabet

source_checkout.install()

try:
    __version__ = version("wensu")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Alphabet", "get_alphabet", "load", "__version__"]


def __getattr__(name: str):
    # ``wensu.load`` imports torch; resolve it lazily so ``import wensu`` stays light.
    if name == "load":
        from wensu.checkpoint import load

        return load
    raise AttributeError(f"module 'wensu' has no attribute {name!r}")
