"""Progress bars that update on a terminal and stay quiet in a redirected log.

tqdm writes a ``\\r`` update several times a second; redirected to a file that is thousands of
lines of noise (a probe run left tens of thousands). Every wensu bar goes through here: drawn
only when stderr is a terminal and the caller has not switched it off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def interactive(stream: Any = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal, where a live bar is readable."""
    try:
        return (stream or sys.stderr).isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **options: Any):
    """``tqdm`` on stderr, disabled unless ``enabled`` and stderr is a terminal."""
    options.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not (enabled and interactive()), **options)
