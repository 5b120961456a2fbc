"""What the ``wensu-*`` Hydra apps share: running a task over ``conf/<name>.yaml`` (installed as
``wensu.conf``, so it works from any directory) and turning user errors into one line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


def run_app(task: Callable[[Any], Any], config_name: str) -> None:
    """Run ``task(cfg)`` as the Hydra app over ``conf/<config_name>.yaml`` (``key=value``
    overrides, ``-m`` sweeps, ``--cfg job``)."""
    import os

    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Composition errors (unknown group option such as probe=nosuch, unknown key) then reach
    # us unformatted and print as one line, not Hydra's multi-line report.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        hydra.main(config_path="pkg://wensu.conf", config_name=config_name, version_base="1.3")(
            task
        )()
    except (HydraException, OmegaConfBaseException) as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        print(f"error: {first.strip()}", file=sys.stderr)
        sys.exit(2)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A missing required option or an invalid input (any ``ValueError``, whose message names
    the file, record or option) ends the command with ``error: ...`` and exit code 2."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        yield
    except MissingMandatoryValue as err:
        print(f"error: missing required option {err.full_key}=...", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
