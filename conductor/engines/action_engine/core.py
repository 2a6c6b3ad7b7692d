"""What every engine keeps and how it changes: transitions, saving, retries and reverting.

:class:`EngineCore` holds a run's state (the compiled atoms, the ready and
delayed heaps, the failures seen) and the primitives that change it: every
flow and atom transition goes through :meth:`EngineCore._flow_to` /
:meth:`EngineCore._atom_to` (checked against :mod:`conductor.states`, then
announced to listeners), every finished atom is saved with
:meth:`EngineCore._save`.  The second half undoes work: it asks retry
controllers what to do with failures, re-runs a subflow, reverts finished
atoms in the reverse order of completion and builds the error ``run()``
raises.  :class:`~conductor.engines.action_engine.engine.ActionEngine` adds
the public API and the scheduling loop on top.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from typing import Any

from conductor import states
from conductor.engines.action_engine.runtime import AtomRuntime, resolve
from conductor.exceptions import Cancelled, ExecutionFailure, Failure, NotFound, RevertFailure
from conductor.flow import Flow
from conductor.retry import Decision
from conductor.storage import ProgressBackend, Storage
from conductor.types.notifier import Notifier

LOG = logging.getLogger(__name__)

NO_RESULT: Any = object()
DONE = frozenset((states.SUCCESS, states.IGNORE))
REVERTIBLE = frozenset((states.SUCCESS, states.FAILURE, states.RETRYING))
LAUNCHABLE = frozenset((states.PENDING, states.RETRYING))
_ATOM_NEXT = {
    old: frozenset(n for o, n in states.atom_transitions() if o == old)
    for old in states.ATOM_STATES
}


class _NoAtom:
    """Marks a cancel seen before any atom moved."""


NO_ATOM: Any = _NoAtom()


class EngineCore:
    """The state of one run and the transitions, saves and reverts that change it."""

    storage: Storage
    notifier: Notifier
    atom_notifier: Notifier
    _flow: Flow
    _atoms: list[AtomRuntime]
    _progress: ProgressBackend | None
    _ready: list[int]
    _delayed: list[tuple[float, int]]
    _failed: list[AtomRuntime]
    _last_failed: list[AtomRuntime]
    _flow_failures: dict[str, Failure]
    _progress_error: Exception | None
    _cancel_requested: bool
    _cancel_reason: str | None
    _cancelled_at: AtomRuntime | None
    _last_atom: AtomRuntime | None

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

    def _atom_to(self, rt: AtomRuntime, new: str, result: Any = NO_RESULT, **extra: Any) -> None:
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
            if result is not NO_RESULT:
                details["result"] = result
            if extra:
                details.update(extra)
            self.atom_notifier.notify(new, details)

    def _save(self, rt: AtomRuntime, *, final: bool = False) -> None:
        """Save an atom's record. ``final``: the flow's last atom succeeded, so no
        other atom starts after it; a backend with ``hold`` may then keep the
        record to store it with the job's outcome (one write less per job)."""
        if self._progress is None or self._progress_error is not None:
            return
        try:
            hold = getattr(self._progress, "hold", None) if final else None
            record = rt.to_record()
            if hold is not None and hold(rt.name, record):
                return
            self._progress.save(rt.name, record)
        except Exception as err:
            LOG.warning(
                "Saving progress of %s in flow %s failed; stopping without reverting: %s",
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
        for rt in sorted((m for m in members if m.state in REVERTIBLE), key=_by_seq, reverse=True):
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
            (a for a in self._atoms if a.state in REVERTIBLE), key=_by_seq, reverse=True
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
                value = rt.revert_fn(rt.history, **self._method_args(rt, "revert"))
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
        self, rt: AtomRuntime, method: str, result: Any = NO_RESULT
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
        if "result" in spec.engine_params and result is not NO_RESULT:
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
        at = self._cancelled_at if self._cancelled_at is not NO_ATOM else None
        where = f" at {at.kind} {at.name!r}" if at is not None else " before any task ran"
        why = f": {self._cancel_reason}" if self._cancel_reason else ""
        return Cancelled(
            f"flow {self._flow.name!r} was cancelled{where}{why}; finished work was reverted",
            at.name if at is not None else None,
            self._cancel_reason,
            self._flow_failures,
        )


    @staticmethod
    def _recount(atoms: Iterable[AtomRuntime]) -> None:
        for rt in atoms:
            rt.waiting = sum(1 for p in rt.preds if p.state not in DONE)


def _by_seq(rt: AtomRuntime) -> int:
    return rt.seq


def _describe(failed: list[AtomRuntime]) -> str:
    return "; ".join(
        f"{rt.kind} {rt.name!r} raised {rt.failure.pformat()}"
        for rt in failed
        if rt.failure is not None
    )
