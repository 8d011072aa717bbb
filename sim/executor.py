"""Executor: where many runs go, shared by sweeps and calibration.

``Executor(workers=N)`` runs tasks on local processes (``workers=1``: in this process, serially);
``Executor(scheduler="tcp://host:port")`` sends them to an existing Dask distributed cluster.
Results are the same wherever a task runs: a task is a pure function of its arguments (a run is
fixed by its scenario and seed).

Usage::

    with Executor(workers=2) as ex:
        for key, value, error in ex.map_unordered(fn, {"a": args_a, "b": args_b}):
            ...

``error`` is None on success, else the exception's text (the task's other results go on).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any


class SchedulerError(OSError):
    """The Dask scheduler address cannot be reached."""


def default_workers() -> int:
    """Local processes to use by default: every core."""
    return max(1, os.cpu_count() or 1)


def _call(fn: Callable, args: tuple) -> Any:
    return fn(*args)


class Executor:
    """Runs independent tasks serially, on local processes, or on a Dask cluster."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 connect_timeout: float = 10.0):
        if workers is not None and workers < 1:
            raise ValueError(f"workers: {workers} is not allowed; use an integer >= 1")
        self.workers = workers or default_workers()
        self.scheduler = scheduler
        self.connect_timeout = connect_timeout
        self._pool = None
        self._client = None

    @property
    def kind(self) -> str:
        """``serial``, ``processes`` or ``dask``."""
        if self.scheduler:
            return "dask"
        return "serial" if self.workers == 1 else "processes"

    def __enter__(self) -> Executor:
        if self.scheduler:
            from dask.distributed import Client

            try:
                self._client = Client(self.scheduler, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise SchedulerError(f"--scheduler {self.scheduler}: cannot reach the Dask "
                                     f"scheduler ({exc})") from None
        elif self.workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def map_unordered(self, fn: Callable, tasks: dict[Any, tuple],
                      max_pending: int | None = None) -> Iterator[tuple[Any, Any, str | None]]:
        """Yield ``(key, result, error)`` for every task as it finishes.

        At most ``max_pending`` tasks are in flight (default: 4 per worker), so that a long
        sweep neither floods the scheduler nor loses more than that on a kill.
        """
        items = iter(tasks.items())
        if self.kind == "serial":
            for key, args in items:
                try:
                    yield key, fn(*args), None
                except Exception as exc:  # noqa: BLE001 - a failing task is recorded
                    yield key, None, f"{type(exc).__name__}: {exc}"
            return
        limit = max_pending or 4 * self.workers
        pending: dict[Any, Any] = {}

        def submit(key, args):
            if self._client is not None:
                fut = self._client.submit(_call, fn, args, pure=False)
            else:
                fut = self._pool.submit(_call, fn, args)
            pending[fut] = key

        for key, args in items:
            submit(key, args)
            if len(pending) >= limit:
                break
        while pending:
            if self._client is not None:
                from dask.distributed import wait as dwait

                done = dwait(list(pending), return_when="FIRST_COMPLETED").done
            else:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                key = pending.pop(fut)
                try:
                    yield key, fut.result(), None
                except Exception as exc:  # noqa: BLE001
                    yield key, None, f"{type(exc).__name__}: {exc}"
                nxt = next(items, None)
                if nxt is not None:
                    submit(*nxt)
