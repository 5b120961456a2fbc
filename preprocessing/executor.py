"""Where the pipeline's tasks run: in this process, a local process pool, or a Ray cluster.

Every stage is a list of independent tasks (a module-level function and a picklable argument)
whose results the driver consumes in task order, so the output never depends on the executor.
``executor=local`` (the default) needs nothing beyond the package; ``executor=ray`` imports Ray
only when chosen (``pip install wensu[ray]``) and connects to ``ray.address`` or
``$RAY_ADDRESS``, else starts a local Ray instance.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from wensu.ray_cluster import connect, failure_line

from .errors import ConfigError, PreprocessError

log = logging.getLogger("wensu.preprocessing")


class InProcess:
    """Runs each task here, one after the other (``num_workers=1``)."""

    workers = 1

    def map(self, fn: Callable, tasks: Iterable, *, window: int = 0) -> Iterator:
        return map(fn, tasks)

    def close(self) -> None:
        pass


class ProcessPool:
    """A forked pool of ``workers`` processes (spawned where fork is missing)."""

    def __init__(self, workers: int):
        self.workers = workers
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._pool = multiprocessing.get_context(method).Pool(workers)

    def map(self, fn: Callable, tasks: Iterable, *, window: int = 0) -> Iterator:
        if window == 1:  # one task at a time (the test pause hook needs a quiet pool)
            return (self._pool.apply(fn, (task,)) for task in tasks)
        return self._pool.imap(fn, tasks, chunksize=1)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()


class RayExecutor:
    """Tasks as Ray remote functions (retried when a worker dies), results in task order."""

    def __init__(self, address: str | None, num_cpus: int | None, max_retries: int):
        ray, self._started = connect(address, num_cpus, ConfigError)
        self.ray = ray
        self.workers = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self.max_retries = max_retries
        self._remote: dict[Callable, object] = {}

    def map(self, fn: Callable, tasks: Iterable, *, window: int = 0) -> Iterator:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self.ray.remote(max_retries=self.max_retries)(fn)
            self._remote[fn] = remote
        limit = window or 2 * self.workers  # bounded: results wait in the object store
        pending: deque = deque()
        for task in tasks:
            pending.append(remote.remote(task))
            if len(pending) >= limit:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def _get(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            raise PreprocessError(
                f"a Ray task failed after {self.max_retries} retries: {failure_line(err)}"
            ) from None

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def make_executor(kind: str, workers: int, ray_settings: dict):
    """The executor named by the ``executor`` setting."""
    if kind == "ray":
        return RayExecutor(
            ray_settings.get("address"), ray_settings.get("num_cpus"),
            int(ray_settings.get("max_retries", 3)),
        )  # fmt: skip
    return InProcess() if workers <= 1 else ProcessPool(workers)
