"""Run settings every ``wensu-eval`` context needs, protein or cell: where each probe's data lives,
which device to run on, and how many CPU threads to use."""

from __future__ import annotations

import os
from typing import Any

import torch

from wensu.datasets.fetch import FetchError
from wensu.datasets.location import ENV_DATA, DataNotFound, Located, locate
from wensu.probes.common.errors import EvalConfigError

# The built-in data set each probe reads (wensu.datasets registry names).
PROBE_DATA = {
    "ss": "ss",
    "contacts": "contacts",
    "amr": "amr",
    "perplexity": "scop",
    "variants": "variants",
    "cell_type": "pbmc",
}
SAMPLE_NOTE = (
    "Data: the embedded evaluation sample (a small real cut of the built-in sets; "
    "wensu/resources/eval_sample/SOURCES.md), a smoke check rather than a benchmark: "
    "`wensu-data fetch {name}` gets the full set."
)


def configured_data_dir(value: str | None) -> str | None:
    """The data directory the user configured (``data_dir=`` or $WENSU_DATA), if any."""
    return str(value) if value else os.environ.get(ENV_DATA) or None


def resolve_data_dir(
    value: str | None, data_set: str, *, fast: bool = False, fetch: bool = True
) -> Located:
    """Where built-in set ``data_set`` lives: ``data_dir=`` → $WENSU_DATA → the per-user cache;
    fetched there on first use when ``fetch`` (and not $WENSU_OFFLINE). With nothing configured,
    a quick run (``fast``) uses the embedded sample instead of downloading."""
    try:
        return locate(
            data_set,
            value,
            allow_sample=fast and configured_data_dir(value) is None,
            allow_fetch=fetch,
        )
    except (DataNotFound, FetchError) as err:
        raise EvalConfigError(str(err)) from None


def set_cpu_threads(value: Any) -> int:
    """Apply ``cpu_threads``: an integer, or ``auto`` = 1 thread when the CPU is already busy
    (1-minute load average >= cores - 1), else torch's default. On a shared, busy CPU the
    intra-op pool waits for cores more than it computes: measured 2-3x slower with 2 threads."""
    if value == "auto":
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 1
        value = 1 if busy else torch.get_num_threads()
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise EvalConfigError(
            f"cpu_threads must be 'auto' or a positive integer, got {value!r}"
        ) from None
    if threads < 1:
        raise EvalConfigError(f"cpu_threads must be 'auto' or a positive integer, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def resolve_device(value: str) -> str:
    """``auto`` -> cuda when available, else cpu; a cuda device without CUDA is an error."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise EvalConfigError(f"device={value}: CUDA is not available")
    return value
