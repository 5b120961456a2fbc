"""Connecting to Ray, for the parts that scale out on it (``executor=ray`` of
``wensu-preprocess`` and ``wensu-embed``).

Ray is imported only when asked for (``pip install 'wensu[ray]'``). The address is the
configured one, else ``$RAY_ADDRESS``, else a local instance is started (and shut down by the
caller that started it); a session that already called ``ray.init`` is used as it is.
"""

from __future__ import annotations

import os
from types import ModuleType

INSTALL_HINT = "executor=ray needs Ray: pip install 'wensu[ray]' (or pip install 'ray[data]')"


def connect(
    address: str | None, num_cpus: int | None, error: type[Exception]
) -> tuple[ModuleType, bool]:
    """-> (the ``ray`` module, whether this call started the instance); a missing Ray raises
    ``error`` with the install hint."""
    try:
        import ray
    except ImportError:
        raise error(INSTALL_HINT) from None
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"address": address} if address else {"num_cpus": num_cpus}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray, True


def failure_line(err: BaseException) -> str:
    """The last line of a Ray task failure's cause: its own message, not a remote traceback."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip()
    return text.splitlines()[-1] if text else repr(cause)
