"""The parallel engine: independent atoms at once on a bounded thread pool.

It reuses the serial engine's scheduling loop and swaps the executor hooks:
atoms are submitted to a pool (each with a copy of the caller's context
variables, so :func:`conductor.context.current` works on pool threads) and
their outcomes come back through a queue the loop blocks on.
"""

from __future__ import annotations

import contextvars
import os
import queue
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from conductor.engines.action_engine.engine import ActionEngine
from conductor.engines.action_engine.runtime import AtomRuntime, Outcome, execute_atom
from conductor.flow import Flow

__all__ = ["ParallelActionEngine"]


class ParallelActionEngine(ActionEngine):
    """Runs independent atoms at once on a bounded thread pool.

    ``max_workers`` bounds the concurrency (default: CPU count + 4, at most
    32); ``executor`` supplies an executor to use instead of a private pool
    (it is not shut down by the engine).
    """

    OPTIONS = frozenset(("max_workers", "executor"))

    def __init__(self, flow: Flow, store: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(flow, store, **kwargs)
        max_workers = self.options.get("max_workers")
        executor: Executor | None = self.options.get("executor")
        if max_workers is None:
            max_workers = getattr(executor, "_max_workers", None) or min(
                32, (os.cpu_count() or 1) + 4
            )
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        self._capacity = max_workers
        self._executor = executor
        self._pool: Executor | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def _start(self) -> None:
        if self._executor is not None:
            self._pool = self._executor
        else:
            self._pool = ThreadPoolExecutor(self._capacity, thread_name_prefix="conductor-engine")

    def _stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and pool is not self._executor:
            pool.shutdown(wait=True)

    def _submit(self, rt: AtomRuntime, submit_time: float) -> None:
        assert self._pool is not None
        self._pool.submit(contextvars.copy_context().run, self._work, rt, submit_time)

    def _work(self, rt: AtomRuntime, submit_time: float) -> None:
        try:
            outcome: Any = execute_atom(
                rt, self.storage.values, submit_time, self._json_only, self._may_start
            )
        except BaseException as err:  # handed to the engine thread, which re-raises it
            outcome = _Fatal(err)
        self._queue.put(outcome)

    def _wait(self, timeout: float | None) -> Outcome | None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _WAKE:
            return None
        if isinstance(item, _Fatal):
            raise item.error
        return item  # type: ignore[no-any-return]

    def _wake(self) -> None:
        self._queue.put(_WAKE)


class _Fatal:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


_WAKE = object()
