"""Where the study's stages run: in this process one after another, or as Ray tasks on a local or remote cluster.

Both backends take the same calls: ``submit(fn, kwargs, after, tag)`` starts ``fn(**kwargs)`` once the jobs
in ``after`` have finished; ``gather()`` waits for every job submitted so far and returns ``(finished tags,
first error or None)``: after a failure the other jobs still run to their end. The serial backend runs a job
inside ``submit`` (an error propagates at once) and returns its tag as finished from then on. ``on_done(tag,
seconds)``, when set, hears of every job as it finishes (a progress bar, a log). Nothing durable should wait
for ``gather`` or ``on_done``: the driver may be killed while jobs finish, so a job records its own results
(``experiments/run.py``'s stages write their key files themselves, ``agents.rundir.run_keyed``).
Stage functions are seeded and single-threaded, so a run gives the same bytes on either.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["BACKENDS", "RayBackend", "SerialBackend", "make_backend"]


class SerialBackend:
    """Run each job at once, in this process (for debugging, and where Ray's start-up would dominate)."""

    name = "serial"

    def __init__(self) -> None:
        self._done: list[Any] = []
        self.on_done: Callable[[Any, float], None] | None = None

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], after: Sequence[Any] = (), tag: Any = None
               ) -> Any:  # fmt: skip
        start = time.perf_counter()
        fn(**kwargs)
        self._done.append(tag)
        if self.on_done is not None:
            self.on_done(tag, time.perf_counter() - start)
        return tag

    def gather(self) -> tuple[list[Any], BaseException | None]:
        done, self._done = self._done, []
        return done, None

    def close(self) -> None:
        """Nothing to release."""


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], *after: Any) -> None:
    """A Ray task: ``after`` are the results of the jobs it waits for (Ray resolves them first)."""
    fn(**kwargs)


class RayBackend:
    """Ray tasks of one CPU each; without ``address`` a local Ray with this machine's cores (or ``num_cpus``).

    With an address (``auto``, or ``host:port`` of ``ray start --head``) it joins that cluster: every node must
    have this project installed, and ``--out`` must be a folder every node can write (a shared file system).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        import ray

        self._ray = ray
        env = {name: os.environ[name] for name in ("TRM_ENV_CACHE_DIR", "TRM_ENV_VERIFY") if name in os.environ}
        options: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
        if address is None:
            options.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
        ray.init(address=address, ignore_reinit_error=True, **options)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        self._pending: dict[Any, Any] = {}
        self._started: dict[Any, float] = {}
        self.on_done: Callable[[Any, float], None] | None = None

    def submit(self, fn: Callable[..., Any], kwargs: dict[str, Any], after: Sequence[Any] = (), tag: Any = None
               ) -> Any:  # fmt: skip
        ref = self._remote.remote(fn, kwargs, *after)
        self._pending[ref], self._started[ref] = tag, time.perf_counter()
        return ref

    def gather(self) -> tuple[list[Any], BaseException | None]:
        done, failed = [], None
        while self._pending:
            ready, _ = self._ray.wait(list(self._pending), num_returns=1)
            tag, started = self._pending.pop(ready[0]), self._started.pop(ready[0])
            try:
                self._ray.get(ready[0])
            except Exception as error:  # a failed stage: the others still finish and are recorded
                failed = failed or _cause(error)
            else:
                done.append(tag)
                if self.on_done is not None:
                    self.on_done(tag, time.perf_counter() - started)
        return done, failed

    def close(self) -> None:
        self._ray.shutdown()


def _cause(error: BaseException) -> BaseException:
    """The stage's own exception inside a Ray task error (so callers see the same error on both backends)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


BACKENDS = ("serial", "ray")


def make_backend(name: str, address: str | None = None, num_cpus: int | None = None) -> SerialBackend | RayBackend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {list(BACKENDS)}")
    if name == "serial":
        if address is not None:
            raise ValueError("--address goes with --backend ray")
        return SerialBackend()
    return RayBackend(address, num_cpus)
