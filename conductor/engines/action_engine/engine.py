"""The engine running a compiled flow: its public API and the scheduling loop.

One scheduling loop serves both engines: atoms whose predecessors are done
wait in a ready heap (ordered by position in the flow), are launched while
capacity allows (1 for :class:`SerialActionEngine`, ``max_workers`` for
:class:`~conductor.engines.action_engine.parallel.ParallelActionEngine`), and
each completion updates storage, notifies listeners, saves progress and
releases successors.  Transitions, saving and reverting live in
:mod:`conductor.engines.action_engine.core`.

``cancel()`` and ``suspend()`` only set flags (safe from listeners and other
threads); the loop reads them before launching anything, lets running atoms
finish and then reverts (cancel) or stops (suspend).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from conductor import states
from conductor.context import JobContext, as_context, reset_current, set_current
from conductor.engines.action_engine.compiler import compile_flow
from conductor.engines.action_engine.core import (
    DONE,
    LAUNCHABLE,
    NO_ATOM,
    EngineCore,
)
from conductor.engines.action_engine.runtime import AtomRuntime, Outcome, execute_atom, new_uuid
from conductor.exceptions import Failure, InvalidState, TaskCancelled
from conductor.flow import Flow
from conductor.storage import ProgressBackend, Storage
from conductor.types.notifier import Notifier

__all__ = ["ActionEngine", "SerialActionEngine"]

LOG = logging.getLogger(__name__)


class ActionEngine(EngineCore):
    """Runs one flow once (or until suspended); see :func:`conductor.engines.load`.

    ``storage`` holds values, states, results and execution records;
    ``notifier`` announces flow transitions and ``atom_notifier`` task and
    retry transitions.  ``progress`` (a
    :class:`~conductor.storage.ProgressBackend`) persists each finished atom
    and is read at construction to skip atoms that already succeeded;
    ``context`` is what :func:`conductor.context.current` returns inside tasks.
    """

    #: Names accepted in ``**options`` besides the common ones.
    OPTIONS: frozenset[str] = frozenset()
    _capacity = 1

    def __init__(
        self,
        flow: Flow,
        store: Mapping[str, Any] | None = None,
        *,
        progress: ProgressBackend | None = None,
        context: Mapping[str, Any] | None = None,
        json_results: bool | None = None,
        **options: Any,
    ):
        unknown = set(options) - self.OPTIONS
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown options {sorted(unknown)}; "
                f"accepted: {sorted(self.OPTIONS | {'progress', 'context', 'json_results'})}"
            )
        self.options = dict(options)
        self._flow = flow
        compilation = compile_flow(flow, store or {})
        self._atoms = compilation.atoms
        self.storage = Storage(flow.name, new_uuid(), store, self._atoms, compilation.providers)
        self.notifier = Notifier()
        self.atom_notifier = Notifier()
        self._progress = progress
        self._json_only = progress is not None if json_results is None else json_results
        self._context: JobContext = as_context(context)
        self._start_guards: list[Callable[[str], bool]] = []
        self._run_lock = threading.Lock()
        self._suspend_requested = False
        self._cancel_requested = False
        self._cancel_reason: str | None = None
        self._cancelled_at: AtomRuntime | None = None
        self._last_atom: AtomRuntime | None = None
        self._seq = 0
        self._ready: list[int] = []
        self._delayed: list[tuple[float, int]] = []
        self._failed: list[AtomRuntime] = []
        self._last_failed: list[AtomRuntime] = []
        self._flow_failures: dict[str, Failure] = {}
        self._progress_error: Exception | None = None
        self._resumed = self._restore()
        self._recount(self._atoms)
        self._ready = [
            rt.index for rt in self._atoms if rt.state == states.PENDING and not rt.waiting
        ]
        heapq.heapify(self._ready)

    # -- public API ------------------------------------------------------------------------

    @property
    def flow(self) -> Flow:
        """The flow this engine runs."""
        return self._flow

    def run(self) -> None:
        """Run the flow until it succeeds, is suspended, fails or is cancelled.

        Returns normally on ``SUCCESS`` and on ``SUSPENDED`` (see
        ``storage.get_flow_state()``); raises
        :class:`~conductor.exceptions.ExecutionFailure` after a failure was
        reverted, :class:`~conductor.exceptions.RevertFailure` when reverting
        failed, :class:`~conductor.exceptions.Cancelled` after ``cancel()``,
        and the progress backend's own exception when saving failed.
        """
        if not self._run_lock.acquire(blocking=False):
            raise InvalidState(f"flow {self._flow.name!r} is already running")
        try:
            state = self.storage.flow_state
            if state in states.FINISHED_FLOW_STATES:
                raise InvalidState(f"flow {self._flow.name!r} already finished in state {state}")
            token = set_current(self._context)
            try:
                if state == states.SUSPENDED or self._resumed:
                    self._flow_to(states.RESUMING)
                self._flow_to(states.RUNNING)
                self._start()
                try:
                    self._run_loop()
                finally:
                    self._stop()
            finally:
                reset_current(token)
        finally:
            if self.storage.flow_state in states.FINISHED_FLOW_STATES:
                self._unlink()
            self._run_lock.release()

    def _unlink(self) -> None:
        """A finished flow never schedules again: drop the links from atoms to later ones
        (successors, retry members, deciders), the compiled graph's only cycles, so that
        the engine is freed by reference counting, not left to the cycle collector."""
        for rt in self._atoms:
            rt.succs = []
            rt.members = ()
            rt.deciders = ()

    def suspend(self) -> None:
        """Stop launching atoms; ``run()`` returns once the running ones finish (``SUSPENDED``).

        Thread-safe and callable from a listener.  Nothing is reverted; run the
        engine again, or load a new one with the same progress backend, to resume.
        """
        self._suspend_requested = True
        self._wake()

    def cancel(self, reason: str | None = None) -> None:
        """Stop launching atoms, let running ones finish, revert, and raise ``Cancelled``.

        Thread-safe and callable from a listener; takes effect at the next
        transition.  Running tasks see it through ``context.cancelled()``.
        """
        self._cancel_reason = reason
        self._cancel_requested = True
        self._context.signal_cancel("cancelled")
        self._wake()

    def add_start_guard(self, guard: Callable[[str], bool]) -> None:
        """Ask ``guard(task_name)`` right before each task's ``execute``; false stops the engine.

        A refused task is not run (it goes back to ``PENDING``, nothing is
        saved) and the engine suspends.  The claim listener uses this so that
        no task starts once the claim is known lost.  Guards run on the thread
        that executes the task.
        """
        self._start_guards.append(guard)

    def remove_start_guard(self, guard: Callable[[str], bool]) -> None:
        """Undo :meth:`add_start_guard`."""
        if guard in self._start_guards:
            self._start_guards.remove(guard)

    @property
    def context(self) -> JobContext:
        """The context tasks of this engine see as :func:`conductor.context.current`."""
        return self._context

    # -- executor hooks (overridden by the parallel engine) --------------------------------

    def _start(self) -> None:
        self._done: deque[Outcome] = deque()
        self._wakeup = threading.Event()

    def _stop(self) -> None:
        return None

    def _submit(self, rt: AtomRuntime, submit_time: float) -> None:
        self._done.append(
            execute_atom(rt, self.storage.values, submit_time, self._json_only, self._may_start)
        )

    def _may_start(self, name: str) -> bool:
        """Whether task ``name`` may start now (checked right before its ``execute``)."""
        if self._suspend_requested or self._cancel_requested:
            return False
        for guard in list(self._start_guards):
            if not guard(name):
                LOG.info("Task %s of flow %s not started: stopping", name, self._flow.name)
                self.suspend()
                return False
        return True

    def _wait(self, timeout: float | None) -> Outcome | None:
        if self._done:
            return self._done.popleft()
        self._wakeup.wait(timeout)
        self._wakeup.clear()
        return None

    def _wake(self) -> None:
        wakeup = getattr(self, "_wakeup", None)
        if wakeup is not None:
            wakeup.set()

    # -- the loop ----------------------------------------------------------------------------

    def _run_loop(self) -> None:
        while True:
            self._schedule()
            if self._progress_error is not None:
                self._flow_to(states.FAILURE)
                raise self._progress_error
            if self._cancel_requested:
                self._revert_all()
                raise self._cancelled_error()
            if self._failed:
                if self._handle_failures():
                    continue
                raise self._failure_error()
            if all(rt.state in DONE for rt in self._atoms):
                self._suspend_requested = False
                self._flow_to(states.SUCCESS)
                return
            if self._suspend_requested:
                self._suspend_requested = False
                if self.storage.flow_state == states.RUNNING:
                    self._flow_to(states.SUSPENDING)
                self._flow_to(states.SUSPENDED)
                return
            stuck = [rt.name for rt in self._atoms if rt.state not in DONE]
            raise InvalidState(f"flow {self._flow.name!r} cannot make progress: {stuck}")

    def _halted(self) -> bool:
        if self._cancel_requested:
            if self._cancelled_at is None:
                self._cancelled_at = self._last_atom or NO_ATOM
            return True
        if self._suspend_requested:
            if self.storage.flow_state == states.RUNNING:
                self._flow_to(states.SUSPENDING)
            return True
        return bool(self._failed) or self._progress_error is not None

    def _schedule(self) -> None:
        atoms = self._atoms
        ready = self._ready
        delayed = self._delayed
        capacity = self._capacity
        running = 0
        while True:
            halted = self._halted()
            if not halted:
                if delayed:
                    now = time.monotonic()
                    while delayed and delayed[0][0] <= now:
                        heapq.heappush(ready, heapq.heappop(delayed)[1])
                while ready and running < capacity:
                    rt = atoms[heapq.heappop(ready)]
                    if rt.state not in LAUNCHABLE:
                        continue
                    if rt.deciders and self._decide_skip(rt):
                        continue
                    self._launch(rt)
                    running += 1
            if running:
                timeout = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
            elif halted or not delayed:
                return
            else:
                timeout = max(0.0, delayed[0][0] - time.monotonic())
            outcome = self._wait(timeout)
            if outcome is not None:
                running -= 1
                self._complete(outcome)

    def _last_to_finish(self, rt: AtomRuntime) -> bool:
        """Whether every other atom is done: the flow succeeds with ``rt`` (checked
        from the end, where a flow's unfinished atoms usually are)."""
        if self._cancel_requested or self._failed:
            return False
        return all(other is rt or other.state in DONE for other in reversed(self._atoms))

    def _launch(self, rt: AtomRuntime) -> None:
        self._atom_to(rt, states.RUNNING)
        rt.attempt += 1
        self._submit(rt, time.time())

    def _complete(self, outcome: Outcome) -> None:
        rt, ok, value, record = outcome
        if ok is False and isinstance(value.exception, TaskCancelled):
            # A task that stopped on request: a cancel reverts, any other stop suspends.
            if value.exception.reason == "cancelled" and not self._cancel_requested:
                self.cancel(str(value.exception))
            if not self._cancel_requested:
                ok = None
        if ok is None:
            self._unlaunch(rt)
            return
        record.received_time = time.time()
        rt.execution = record
        if ok:
            self._seq += 1
            rt.seq = self._seq
            rt.result = value
            if rt.is_retry:
                rt.history.append(value)  # type: ignore[union-attr]
            self._atom_to(rt, states.SUCCESS, value)
            self._save(rt, final=self._last_to_finish(rt))
            self._release(rt)
            return
        rt.failure = value
        policy = rt.policy
        if policy is not None and not self._cancel_requested:
            if rt.retry_state is None:
                rt.retry_state = policy.new_state()
            delay = policy.next_delay(rt.retry_state, value.exception)
            if delay is not None:
                self._seq += 1
                rt.seq = self._seq
                LOG.info(
                    "Task %s failed (attempt %s), retrying in %.3fs", rt.name, rt.attempt, delay
                )
                self._atom_to(rt, states.RETRYING, value, attempt=rt.attempt, delay=delay)
                heapq.heappush(self._delayed, (time.monotonic() + delay, rt.index))
                return
        self._fail(rt, value)

    def _unlaunch(self, rt: AtomRuntime) -> None:
        """``rt`` did not run (or gave up on a stop): back to ``PENDING``, and stop the flow."""
        rt.attempt -= 1
        self._atom_to(rt, states.PENDING)
        heapq.heappush(self._ready, rt.index)
        self._suspend_requested = True

    def _fail(self, rt: AtomRuntime, failure: Failure) -> None:
        self._seq += 1
        rt.seq = self._seq
        rt.failure = failure
        self._flow_failures[rt.name] = failure
        self._atom_to(rt, states.FAILURE, failure)
        self._save(rt)
        self._failed.append(rt)

    def _release(self, rt: AtomRuntime) -> None:
        """``rt`` is done: successors with no other pending predecessor become ready."""
        for succ in rt.succs:
            succ.waiting -= 1
            if not succ.waiting and succ.state == states.PENDING:
                heapq.heappush(self._ready, succ.index)

    def _decide_skip(self, rt: AtomRuntime) -> bool:
        """Run the graph-flow deciders guarding ``rt``; true if ``rt`` must not be launched."""
        for decider in rt.deciders:
            if decider.decided:
                continue
            decider.decided = True
            try:
                keep = decider.function({s.name: s.result for s in decider.sources})
            except Exception as err:
                LOG.warning("Decider before %s raised; failing it", rt.name, exc_info=True)
                self._atom_to(rt, states.RUNNING)
                self._fail(rt, Failure.from_exception(err))
                return True
            if not keep:
                for target in decider.targets:
                    if target.state == states.PENDING:
                        self._atom_to(target, states.IGNORE)
                        self._save(target)
                        self._release(target)
        return rt.state not in LAUNCHABLE

    # -- loading ---------------------------------------------------------------------------

    def _restore(self) -> bool:
        """Take the saved ``SUCCESS`` records of the progress backend; true if any."""
        if self._progress is None:
            return False
        records = self._progress.load()
        if not records:
            return False
        by_name = {rt.name: rt for rt in self._atoms}
        restored = False
        for name, record in records.items():
            rt = by_name.get(name)
            if rt is None:
                LOG.debug(
                    "Progress names atom %s, which flow %s does not have", name, self._flow.name
                )
                continue
            restored = rt.restore(record) or restored
        for rt in self._atoms:
            if rt.state == states.SUCCESS:
                self._seq += 1
                rt.seq = self._seq
        return restored


class SerialActionEngine(ActionEngine):
    """Runs one atom at a time on the calling thread (no thread pool)."""
