"""A listener printing every transition to stdout or stderr."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from conductor.listeners.base import DEFAULT_LISTEN_FOR, DumpingListener

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["PrintingListener"]


class PrintingListener(DumpingListener):
    """Prints flow and atom transitions (and failure tracebacks) to stdout, or stderr."""

    def __init__(
        self,
        engine: ActionEngine,
        task_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        flow_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        retry_listen_for: Iterable[str] = DEFAULT_LISTEN_FOR,
        stderr: bool = False,
    ):
        super().__init__(engine, task_listen_for, flow_listen_for, retry_listen_for)
        self._stderr = stderr

    def _dump(self, message: str, *args: Any, **kwargs: Any) -> None:
        stream = sys.stderr if self._stderr else sys.stdout
        print(message % args, file=stream)
        exc_info = kwargs.get("exc_info")
        if exc_info is not None:
            traceback.print_exception(*exc_info, file=stream)
