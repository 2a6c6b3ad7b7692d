"""Serial and parallel engines running a compiled flow.

One scheduling loop serves both engines: atoms whose predecessors are done
wait in a ready heap (ordered by position in the flow), are launched while
capacity allows (1 for :class:`SerialActionEngine`, ``max_workers`` for
:class:`ParallelActionEngine`), and each completion updates storage, notifies
listeners, saves progress and releases successors.  Every state change goes
through the transition tables of :mod:`conductor.states`.

``cancel()`` and ``suspend()`` only set flags (safe from listeners and other
threads); the loop reads them before launching anything, lets running atoms
finish and then reverts (cancel) or stops (suspend).
"""

from __future__ import annotations

import contextvars
import heapq
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from conductor import states
from conductor.context import EMPTY, reset_current, set_current
from conductor.engines.action_engine.compiler import compile_flow
from conductor.engines.action_engine.runtime import AtomRuntime, Outcome, execute_atom, resolve
from conductor.exceptions import Cancelled, ExecutionFailure, InvalidState, NotFound, RevertFailure
from conductor.failure import Failure
from conductor.flow import Flow
from conductor.retry import Decision
from conductor.storage import ProgressBackend, Storage
from conductor.types.notifier import Notifier

__all__ = ["ActionEngine", "ParallelActionEngine", "SerialActionEngine"]

LOG = logging.getLogger(__name__)

_NO_RESULT = object()
_DONE = frozenset((states.SUCCESS, states.IGNORE))
_REVERTIBLE = frozenset((states.SUCCESS, states.FAILURE, states.RETRYING))
_LAUNCHABLE = frozenset((states.PENDING, states.RETRYING))
_ATOM_NEXT = {
    old: frozenset(n for o, n in states.atom_transitions() if o == old)
    for old in states.ATOM_STATES
}


class ActionEngine:
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
        self.storage = Storage(
            flow.name, str(uuid.uuid4()), store, self._atoms, compilation.providers
        )
        self.notifier = Notifier()
        self.atom_notifier = Notifier()
        self._progress = progress
        self._json_only = progress is not None if json_results is None else json_results
        self._context: Mapping[str, Any] = context if context is not None else EMPTY
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
            self._run_lock.release()

    def suspend(self) -> None:
        """Stop launching atoms; ``run()`` returns once the running ones finish (``SUSPENDED``).

        Thread-safe and callable from a listener.  Nothing is reverted; run the
        engine again, or load a new one with the same progress backend, to resume.
        """
        self._suspend_requested = True
        self._wake()

    def cancel(self, reason: str | None = None) -> None:
        """Stop launching atoms, let running ones finish, revert, and raise ``Cancelled``.

        Thread-safe and callable from a listener; takes effect at the next transition.
        """
        self._cancel_reason = reason
        self._cancel_requested = True
        self._wake()

    # -- executor hooks (overridden by the parallel engine) --------------------------------

    def _start(self) -> None:
        self._done: deque[Outcome] = deque()
        self._wakeup = threading.Event()

    def _stop(self) -> None:
        return None

    def _submit(self, rt: AtomRuntime, submit_time: float) -> None:
        self._done.append(execute_atom(rt, self.storage.values, submit_time, self._json_only))

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
            if all(rt.state in _DONE for rt in self._atoms):
                self._suspend_requested = False
                self._flow_to(states.SUCCESS)
                return
            if self._suspend_requested:
                self._suspend_requested = False
                if self.storage.flow_state == states.RUNNING:
                    self._flow_to(states.SUSPENDING)
                self._flow_to(states.SUSPENDED)
                return
            stuck = [rt.name for rt in self._atoms if rt.state not in _DONE]
            raise InvalidState(f"flow {self._flow.name!r} cannot make progress: {stuck}")

    def _halted(self) -> bool:
        if self._cancel_requested:
            if self._cancelled_at is None:
                self._cancelled_at = self._last_atom or _NO_ATOM
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
                    if rt.state not in _LAUNCHABLE:
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

    def _launch(self, rt: AtomRuntime) -> None:
        self._atom_to(rt, states.RUNNING)
        rt.attempt += 1
        self._submit(rt, time.time())

    def _complete(self, outcome: Outcome) -> None:
        rt, ok, value, record = outcome
        record.received_time = time.time()
        rt.execution = record
        if ok:
            self._seq += 1
            rt.seq = self._seq
            rt.result = value
            if rt.is_retry:
                rt.history.append(value)  # type: ignore[union-attr]
            self._atom_to(rt, states.SUCCESS, value)
            self._save(rt)
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
        return rt.state not in _LAUNCHABLE

    # -- transitions -----------------------------------------------------------------------

    def _flow_to(self, new: str) -> None:
        storage = self.storage
        old = storage.flow_state
        states.check_flow_transition(old, new)
        storage.flow_state = new
        if self.notifier.has_listeners():
            self.notifier.notify(
                new,
                {
                    "flow_name": storage.flow_name,
                    "flow_uuid": storage.flow_uuid,
                    "old_state": old,
                    "engine": self,
                },
            )

    def _atom_to(self, rt: AtomRuntime, new: str, result: Any = _NO_RESULT, **extra: Any) -> None:
        old = rt.state
        if new not in _ATOM_NEXT[old]:
            states.check_atom_transition(old, new)
        rt.state = new
        self._last_atom = rt
        if self.atom_notifier.has_listeners():
            storage = self.storage
            details = {
                rt.name_key: rt.name,
                rt.uuid_key: rt.uuid,
                "flow_name": storage.flow_name,
                "flow_uuid": storage.flow_uuid,
                "old_state": old,
            }
            if result is not _NO_RESULT:
                details["result"] = result
            if extra:
                details.update(extra)
            self.atom_notifier.notify(new, details)

    def _save(self, rt: AtomRuntime) -> None:
        if self._progress is None or self._progress_error is not None:
            return
        try:
            self._progress.save(rt.name, rt.to_record())
        except Exception as err:
            LOG.warning(
                "Saving progress of %s in flow %s failed; stopping without reverting: %r",
                rt.name,
                self._flow.name,
                err,
            )
            self._progress_error = err

    # -- failures, retries and reverting ---------------------------------------------------

    def _handle_failures(self) -> bool:
        """Ask retry controllers about the failures; true if a subflow is retried."""
        failed, self._failed = self._failed, []
        self._last_failed = failed
        retry: list[AtomRuntime] = []
        for rt in failed:
            scope = rt.scope
            while scope is not None:
                scope.history.record_failure(rt.name, rt.failure)  # type: ignore[union-attr,arg-type]
                decision = self._ask(scope)
                if decision is Decision.RETRY:
                    if scope not in retry:
                        retry.append(scope)
                    break
                if decision is Decision.REVERT_ALL:
                    scope = None
                    break
                scope = scope.scope
            if scope is None:
                self._revert_all()
                return False
        for scope in retry:
            if not any(other is not scope and scope in other.members for other in retry):
                self._retry_scope(scope)
        return True

    def _ask(self, scope: AtomRuntime) -> Decision:
        try:
            kwargs = self._method_args(scope, "on_failure")
            return Decision(scope.atom.on_failure(scope.history, **kwargs))  # type: ignore[attr-defined]
        except Exception:
            LOG.warning(
                "Retry %s failed to decide; reverting everything", scope.name, exc_info=True
            )
            return Decision.REVERT_ALL

    def _retry_scope(self, controller: AtomRuntime) -> None:
        LOG.info("Retry %s runs its subflow again", controller.name)
        self._atom_to(controller, states.RETRYING)
        members = controller.members
        for rt in sorted((m for m in members if m.state in _REVERTIBLE), key=_by_seq, reverse=True):
            if not self._revert_atom(rt) or self._progress_error is not None:
                self._raise_after_revert()
        member_set = set(members)
        for rt in members:
            if rt.state in (states.REVERTED, states.IGNORE):
                self._atom_to(rt, states.PENDING)
            rt.reset()
            rt.attempt = 0
            rt.seq = -1
            for decider in rt.deciders:
                decider.decided = False
        self._delayed[:] = [d for d in self._delayed if self._atoms[d[1]] not in member_set]
        heapq.heapify(self._delayed)
        self._recount({*members, *(s for m in members for s in m.succs)})
        heapq.heappush(self._ready, controller.index)

    def _revert_all(self) -> None:
        self._flow_to(states.REVERTING)
        self._delayed.clear()
        for rt in sorted(
            (a for a in self._atoms if a.state in _REVERTIBLE), key=_by_seq, reverse=True
        ):
            if not self._revert_atom(rt) or self._progress_error is not None:
                self._raise_after_revert()
        self._flow_to(states.REVERTED)

    def _raise_after_revert(self) -> None:
        self._flow_to(states.FAILURE)
        if self._progress_error is not None:
            raise self._progress_error
        broken = [rt for rt in self._atoms if rt.revert_failure is not None]
        reverts = {rt.name: rt.revert_failure for rt in broken}
        first = broken[0]
        failure = first.revert_failure
        assert failure is not None
        trigger = {rt.name: rt.failure for rt in self._last_failed if rt.failure is not None}
        why = (
            "after a cancel" if self._cancel_requested else "after " + _describe(self._last_failed)
        )
        err = RevertFailure(
            f"flow {self._flow.name!r}: reverting {first.kind} {first.name!r} {why} failed with "
            f"{failure.pformat()}; the flow is left in FAILURE",
            first.name,
            reverts,  # type: ignore[arg-type]
            trigger,
        )
        raise err from failure.exception

    def _revert_atom(self, rt: AtomRuntime) -> bool:
        result = rt.result if rt.state == states.SUCCESS else rt.failure
        self._atom_to(rt, states.REVERTING)
        try:
            if rt.is_retry:
                value = rt.revert_fn(rt.history, **self._method_args(rt, "revert"))  # type: ignore[misc]
            elif rt.revert_fn is not None:
                value = rt.revert_fn(**self._method_args(rt, "revert", result))
            else:
                value = None
        except Exception as err:
            LOG.warning("Reverting %s %s failed", rt.kind, rt.name, exc_info=True)
            rt.revert_failure = Failure.from_exception(err)
            self._atom_to(rt, states.REVERT_FAILURE, rt.revert_failure)
            self._save(rt)
            return False
        rt.revert_result = value
        self._atom_to(rt, states.REVERTED, value)
        self._save(rt)
        return True

    def _method_args(
        self, rt: AtomRuntime, method: str, result: Any = _NO_RESULT
    ) -> dict[str, Any]:
        spec = rt.atom.arg_spec(method)
        try:
            values = resolve(rt, self.storage.values, rt.all_bindings)
        except NotFound:
            if rt.args is None:
                raise
            values = {}
        if rt.args:
            values.update(rt.args)
        kwargs = spec.select(values)
        if "result" in spec.engine_params and result is not _NO_RESULT:
            kwargs["result"] = result
        if "flow_failures" in spec.engine_params:
            kwargs["flow_failures"] = dict(self._flow_failures)
        return kwargs

    def _failure_error(self) -> ExecutionFailure:
        failures = {rt.name: rt.failure for rt in self._last_failed if rt.failure is not None}
        name, failure = next(iter(failures.items()))
        err = ExecutionFailure(
            f"flow {self._flow.name!r} failed and was reverted: {_describe(self._last_failed)}",
            name,
            failures,
        )
        err.__cause__ = failure.exception
        return err

    def _cancelled_error(self) -> Cancelled:
        at = self._cancelled_at if self._cancelled_at is not _NO_ATOM else None
        where = f" at {at.kind} {at.name!r}" if at is not None else " before any task ran"
        why = f": {self._cancel_reason}" if self._cancel_reason else ""
        return Cancelled(
            f"flow {self._flow.name!r} was cancelled{where}{why}; finished work was reverted",
            at.name if at is not None else None,
            self._cancel_reason,
            self._flow_failures,
        )

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

    @staticmethod
    def _recount(atoms: Any) -> None:
        for rt in atoms:
            rt.waiting = sum(1 for p in rt.preds if p.state not in _DONE)


class _NoAtom:
    """Marks a cancel seen before any atom moved."""


_NO_ATOM: Any = _NoAtom()


def _by_seq(rt: AtomRuntime) -> int:
    return rt.seq


def _describe(failed: list[AtomRuntime]) -> str:
    return "; ".join(
        f"{rt.kind} {rt.name!r} raised {rt.failure.pformat()}"
        for rt in failed
        if rt.failure is not None
    )


class SerialActionEngine(ActionEngine):
    """Runs one atom at a time on the calling thread (no thread pool)."""


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
            outcome: Any = execute_atom(rt, self.storage.values, submit_time, self._json_only)
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
