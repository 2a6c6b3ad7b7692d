"""Listeners measuring time: durations and event timestamps, kept in storage metadata.

Atom metadata is saved with the atom's progress record (listeners run before
the record is saved), so durations travel with the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from conductor import states
from conductor.listeners.base import (
    FINISH_STATES,
    Listener,
    atom_kind,
    atom_name,
)

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["DurationListener", "EventTimeListener", "PrintingDurationListener"]

_STARTING = (states.RUNNING, states.REVERTING)
_FLOW_FINISHED = (states.SUCCESS, states.FAILURE, states.REVERTED, states.SUSPENDED)


class DurationListener(Listener):
    """Stores how long each atom ran (or reverted) as ``duration`` (seconds) in its metadata.

    The flow's duration goes to the flow metadata the same way.
    """

    def __init__(self, engine: ActionEngine):
        atom_states = _STARTING + FINISH_STATES
        super().__init__(
            engine,
            task_listen_for=atom_states,
            flow_listen_for=(states.RUNNING, *_FLOW_FINISHED),
            retry_listen_for=atom_states,
        )
        self._started: dict[tuple[str, str], float] = {}

    def _record(self, kind: str, name: str, elapsed: float) -> None:
        storage = self._engine.storage
        if kind == "flow":
            storage.update_flow_metadata({"duration": elapsed})
        else:
            storage.update_atom_metadata(name, {"duration": elapsed})

    def _receive(self, kind: str, name: str, state: str, finished: Iterable[str]) -> None:
        key = (kind, name)
        if state in finished:
            started = self._started.pop(key, None)
            if started is not None:
                self._record(kind, name, time.perf_counter() - started)
        elif state in _STARTING:
            self._started[key] = time.perf_counter()

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._receive("flow", details["flow_name"], state, _FLOW_FINISHED)

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._receive(atom_kind(details), atom_name(details), state, FINISH_STATES)

    _retry_receiver = _task_receiver


class PrintingDurationListener(DurationListener):
    """A :class:`DurationListener` that also prints each duration (``printer``: ``print``)."""

    def __init__(self, engine: ActionEngine, printer: Callable[[str], Any] | None = None):
        super().__init__(engine)
        self._printer = printer or print

    def _record(self, kind: str, name: str, elapsed: float) -> None:
        super()._record(kind, name, elapsed)
        self._printer(f"{kind} '{name}' finished in {elapsed:0.2f} seconds")


class EventTimeListener(Listener):
    """Stores the Unix time of every event as ``{state}-timestamp`` in the metadata.

    Takes the arguments of :class:`~conductor.listeners.base.Listener`.
    """

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._engine.storage.update_flow_metadata({f"{state}-timestamp": time.time()})

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._engine.storage.update_atom_metadata(
            atom_name(details), {f"{state}-timestamp": time.time()}
        )

    _retry_receiver = _task_receiver
