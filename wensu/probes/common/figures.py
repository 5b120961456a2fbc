"""Figures of every probe: matplotlib on the Agg backend (no display needed) and one way to
write a PNG, so report.md can link it as ``<probe folder>/<file>``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` as PNG and close it; returns ``<folder>/<name>`` (report.md link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"
