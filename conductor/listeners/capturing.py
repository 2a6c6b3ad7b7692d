"""A listener keeping every transition in a list (mostly for tests)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conductor.listeners.base import DEFAULT_LISTEN_FOR, Listener, atom_name

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["CaptureListener"]


class CaptureListener(Listener):
    """Appends ``_format_capture(kind, state, details)`` of each transition to ``values``.

    By default the captured items are ``(kind, state, details)`` tuples.
    ``capture_flow``/``capture_task``/``capture_retry`` turn kinds off;
    ``skip_flows``/``skip_tasks``/``skip_retries`` name flows or atoms to ignore;
    ``values`` may be an existing list to append to.
    """

    #: Kind of a flow capture.
    FLOW = "flow"
    #: Kind of a task capture.
    TASK = "task"
    #: Kind of a retry capture.
    RETRY = "retry"

    def __init__(
        self,
        engine: ActionEngine,
        task_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        flow_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        retry_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        capture_flow: bool = True,
        capture_task: bool = True,
        capture_retry: bool = True,
        skip_tasks: Iterable[str] | None = None,
        skip_retries: Iterable[str] | None = None,
        skip_flows: Iterable[str] | None = None,
        values: list[Any] | None = None,
    ):
        super().__init__(
            engine,
            task_listen_for=task_listen_for if capture_task else (),
            flow_listen_for=flow_listen_for if capture_flow else (),
            retry_listen_for=retry_listen_for if capture_retry else (),
        )
        self._skip = {
            self.FLOW: frozenset(skip_flows or ()),
            self.TASK: frozenset(skip_tasks or ()),
            self.RETRY: frozenset(skip_retries or ()),
        }
        self.values: list[Any] = values if values is not None else []

    def _format_capture(self, kind: str, state: str, details: dict[str, Any]) -> Any:
        """What is stored for one transition (override to store less)."""
        return (kind, state, details)

    def _capture(self, kind: str, name: str, state: str, details: dict[str, Any]) -> None:
        if name not in self._skip[kind]:
            self.values.append(self._format_capture(kind, state, details))

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._capture(self.FLOW, details["flow_name"], state, details)

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._capture(self.TASK, atom_name(details), state, details)

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._capture(self.RETRY, atom_name(details), state, details)
