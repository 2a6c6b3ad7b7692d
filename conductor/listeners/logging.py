"""Listeners writing transitions to a logger.

:class:`LoggingListener` logs every transition at one level.
:class:`DynamicLoggingListener` picks the level from what happened: the
``failure_level`` (WARNING) for flows ending in ``FAILURE`` or ``REVERTED``,
for atoms in ``FAILURE``, ``RETRYING``, ``REVERTING`` or ``REVERT_FAILURE``
and for any transition carrying a failure (logged with its traceback and the
details of :class:`~conductor.formatters.FailureFormatter`); ``level`` (DEBUG)
otherwise.  Results of the atoms named in ``hide_inputs_outputs_of`` are
never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conductor import states
from conductor.failure import Failure
from conductor.formatters import FailureFormatter
from conductor.listeners.base import (
    DEFAULT_LISTEN_FOR,
    FINISH_STATES,
    DumpingListener,
    Listener,
    atom_kind,
    atom_name,
    atom_uuid,
)

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["DynamicLoggingListener", "LoggingListener"]

LOG = logging.getLogger(__name__)

_FLOW_FAILURE_STATES = frozenset((states.FAILURE, states.REVERTED))
_ATOM_FAILURE_STATES = frozenset(
    (states.FAILURE, states.RETRYING, states.REVERTING, states.REVERT_FAILURE)
)


class LoggingListener(DumpingListener):
    """Logs every transition to ``log`` (default: this module's logger) at ``level``."""

    #: Logger used when none is passed (subclasses may set one).
    _LOGGER: logging.Logger | None = None

    def __init__(
        self,
        engine: ActionEngine,
        task_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        flow_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        retry_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        log: logging.Logger | None = None,
        level: int = logging.DEBUG,
    ):
        super().__init__(engine, task_listen_for, flow_listen_for, retry_listen_for)
        self._logger = log or self._LOGGER or LOG
        self._level = level

    def _dump(self, message: str, *args: Any, **kwargs: Any) -> None:
        self._logger.log(self._level, message, *args, **kwargs)


class DynamicLoggingListener(Listener):
    """Logs transitions at a level chosen by their outcome (see the module docstring)."""

    _LOGGER: logging.Logger | None = None

    def __init__(
        self,
        engine: ActionEngine,
        task_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        flow_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        retry_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        log: logging.Logger | None = None,
        failure_level: int = logging.WARNING,
        level: int = logging.DEBUG,
        hide_inputs_outputs_of: Iterable[str] = (),
        fail_formatter: FailureFormatter | None = None,
    ):
        super().__init__(engine, task_listen_for, flow_listen_for, retry_listen_for)
        self._logger = log or self._LOGGER or LOG
        self._failure_level = failure_level
        self._level = level
        self._hidden = frozenset(hide_inputs_outputs_of)
        self._formatter = fail_formatter or FailureFormatter(
            engine, hide_inputs_outputs_of=self._hidden
        )

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        level = self._failure_level if state in _FLOW_FAILURE_STATES else self._level
        self._logger.log(
            level,
            "Flow '%s' (%s) went from %s to %s",
            details["flow_name"],
            details["flow_uuid"],
            details["old_state"],
            state,
        )

    def _atom_receiver(self, state: str, details: dict[str, Any]) -> None:
        kind, name, uuid = atom_kind(details), atom_name(details), atom_uuid(details)
        result = details.get("result")
        if isinstance(result, Failure):
            exc_info, text = self._formatter.format(result, name.__eq__)
            self._logger.log(
                self._failure_level,
                "%s '%s' (%s) went from %s to %s with a failure\n%s",
                kind.capitalize(),
                name,
                uuid,
                details["old_state"],
                state,
                text,
                exc_info=exc_info,
            )
            return
        level = self._failure_level if state in _ATOM_FAILURE_STATES else self._level
        if state in FINISH_STATES and name not in self._hidden:
            self._logger.log(
                level,
                "%s '%s' (%s) went from %s to %s with result %r",
                kind.capitalize(),
                name,
                uuid,
                details["old_state"],
                state,
                result,
            )
        else:
            self._logger.log(
                level,
                "%s '%s' (%s) went from %s to %s",
                kind.capitalize(),
                name,
                uuid,
                details["old_state"],
                state,
            )

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._atom_receiver(state, details)

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._atom_receiver(state, details)
