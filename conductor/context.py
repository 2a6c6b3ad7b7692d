"""The job context visible to a running task.

``engines.load(..., context={...})`` hands the engine a mapping (the conductor
puts the job id and the claim's fencing token there).  While one of that
engine's tasks executes or reverts, in any engine and on any thread,
:func:`current` returns it, so a task can pass the token on to the systems it
writes to.  Outside a task it returns an empty mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})

_current: ContextVar[Mapping[str, Any]] = ContextVar("conductor_context", default=EMPTY)


def current() -> Mapping[str, Any]:
    """The context mapping of the engine whose task is running, or an empty mapping."""
    return _current.get()


def set_current(context: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Make ``context`` current; give the token to :func:`reset_current` to undo."""
    return _current.set(context)


def reset_current(token: Token[Mapping[str, Any]]) -> None:
    """Undo a :func:`set_current`."""
    _current.reset(token)
