"""The listener base classes.

A listener is attached to one engine and receives its flow, task and retry
transitions through ``_flow_receiver``, ``_task_receiver`` and
``_retry_receiver`` (no-ops here: override the ones you need; the others are
not even registered).  Listeners are context managers::

    with printing.PrintingListener(engine):
        engine.run()

registering on enter and deregistering on exit.  A receiver that raises is
logged by the engine's notifier and never stops the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from conductor import states
from conductor.failure import Failure
from conductor.types.notifier import ANY

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["DEFAULT_LISTEN_FOR", "FINISH_STATES", "DumpingListener", "Listener"]

#: States in which an atom has a result (or a Failure) worth reporting.
FINISH_STATES = (states.FAILURE, states.SUCCESS, states.REVERTED, states.REVERT_FAILURE)

#: By default a listener hears every event.
DEFAULT_LISTEN_FOR = (ANY,)


def _is_task(details: Mapping[str, Any]) -> bool:
    return "task_name" in details


def _is_retry(details: Mapping[str, Any]) -> bool:
    return "retry_name" in details


def atom_kind(details: Mapping[str, Any]) -> str:
    """``"task"`` or ``"retry"``: which kind of atom an atom event is about."""
    return "task" if "task_name" in details else "retry"


def atom_name(details: Mapping[str, Any]) -> str:
    """The name of the atom an atom event is about."""
    return str(details["task_name"] if "task_name" in details else details["retry_name"])


def atom_uuid(details: Mapping[str, Any]) -> str:
    """The uuid of the atom an atom event is about."""
    return str(details["task_uuid"] if "task_uuid" in details else details["retry_uuid"])


class Listener:
    """Base of listeners: registers its receivers with an engine's notifiers."""

    def __init__(
        self,
        engine: ActionEngine,
        task_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        flow_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        retry_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
    ):
        self._engine = engine
        self._listen_for = {
            "flow": tuple(flow_listen_for),
            "task": tuple(task_listen_for),
            "retry": tuple(retry_listen_for),
        }
        self._registrations: list[tuple[Any, str, Any, Any]] = []

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        """Called on each flow transition listened for."""

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        """Called on each task transition listened for."""

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        """Called on each retry-controller transition listened for."""

    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(Listener, method)

    def register(self) -> None:
        """Attach the receivers this listener overrides to the engine's notifiers."""
        if self._registrations:
            return
        engine = self._engine
        plan = (
            ("flow", "_flow_receiver", engine.notifier, None),
            ("task", "_task_receiver", engine.atom_notifier, _is_task),
            ("retry", "_retry_receiver", engine.atom_notifier, _is_retry),
        )
        for kind, method, notifier, details_filter in plan:
            if not self._overrides(method):
                continue
            callback = getattr(self, method)
            for state in self._listen_for[kind]:
                notifier.register(state, callback, details_filter=details_filter)
                self._registrations.append((notifier, state, callback, details_filter))

    def deregister(self) -> None:
        """Detach every receiver registered by :meth:`register`."""
        registrations, self._registrations = self._registrations, []
        for notifier, state, callback, details_filter in registrations:
            notifier.deregister(state, callback, details_filter=details_filter)

    def __enter__(self) -> Listener:
        self.register()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deregister()


class DumpingListener(Listener):
    """Base of listeners that write one line per transition somewhere (``_dump``).

    Lines have the shape ``<engine> has moved task 'name' (uuid) into state
    'SUCCESS' from state 'RUNNING' with result 'x' (failure=False)``; when the
    result is a failure still holding its exception, ``_dump`` also gets
    ``exc_info`` so the traceback can be written too.
    """

    def _dump(self, message: str, *args: Any, **kwargs: Any) -> None:
        """Write ``message % args``; ``kwargs`` may carry ``exc_info``."""
        raise NotImplementedError

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._dump(
            "%s has moved flow '%s' (%s) into state '%s' from state '%s'",
            self._engine,
            details["flow_name"],
            details["flow_uuid"],
            state,
            details["old_state"],
        )

    def _atom_receiver(self, kind: str, state: str, details: dict[str, Any]) -> None:
        message = "%s has moved %s '%s' (%s) into state '%s' from state '%s'"
        args = [self._engine, kind, atom_name(details), atom_uuid(details), state]
        args.append(details["old_state"])
        kwargs = {}
        if state in FINISH_STATES:
            result = details.get("result")
            failed = isinstance(result, Failure)
            if isinstance(result, Failure) and result.exc_info is not None:
                kwargs["exc_info"] = result.exc_info
            message += " with result '%s' (failure=%s)"
            args += (result, failed)
        self._dump(message, *args, **kwargs)

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._atom_receiver("task", state, details)

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._atom_receiver("retry", state, details)
