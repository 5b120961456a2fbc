"""Shared fixtures. Real data comes from $WENSU_DATA (``make test`` sets it to ../shared/data).

A test that needs it skips when it is absent, except under CI (CI=true) where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("WENSU_DATA") or os.environ.get("WENSU_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


# The CLIs that tests start find the data the way a user's would: through $WENSU_DATA.
os.environ.setdefault("WENSU_DATA", str(_shared_data_dir()))


def require_shared(relative: str) -> Path:
    """Path under the shared data folder; skip (or fail under CI) when it is missing."""
    path = _shared_data_dir() / relative
    if not path.exists():
        message = f"shared data missing: {path}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data."""
    return require_shared("")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
