"""What a running task may use: its job's fields, progress reports and cancellation.

``engines.load(..., context={...})`` hands the engine a mapping (the conductor
puts the job id and the claim's fencing token there).  While one of that
engine's tasks executes or reverts, in any engine and on any thread,
:func:`current` returns it as a :class:`JobContext`: still a read-only
mapping (``current()["fencing_token"]``), plus

* ``progress(fraction, message=None, **details)`` — how far the running task
  is; a conductor writes it to the board (fenced by the claim's token,
  rate-limited, the latest value wins);
* ``cancelled()`` — a local check, no round trip: true once the job was
  cancelled, its claim was lost or its conductor is shutting down;
* ``check_cancelled()`` — raises :class:`~conductor.exceptions.TaskCancelled`
  when ``cancelled()`` is true;
* ``on_cancel(callback)`` — ``callback(reason)`` runs once, on the thread that
  signals the stop (keep it short: set an event, close a socket);
* ``post_child(name, flow, store, key=...)`` and ``wait_for_children(timeout)``
  — child jobs of the running job (see :mod:`conductor.children`).

The module-level functions of the same names act on :func:`current`, so a
task can write ``context.check_cancelled()``.  Outside a task :func:`current`
is an empty context on which they do nothing (and ``cancelled()`` is false),
so tasks can be called directly in unit tests.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from conductor import children
from conductor.exceptions import TaskCancelled
from conductor.types.notifier import callable_name

__all__ = [
    "EMPTY",
    "JobContext",
    "cancelled",
    "check_cancelled",
    "current",
    "current_task",
    "on_cancel",
    "post_child",
    "progress",
    "wait_for_children",
]

LOG = logging.getLogger(__name__)

#: Longest progress message kept (longer ones are cut).
MAX_MESSAGE = 1000
#: Largest encoded ``details`` of one progress report, in bytes.
MAX_DETAILS = 4096

#: ``report(task_name, progress)``: where a context sends a task's progress.
ProgressSink = Callable[[str, dict[str, Any]], None]
#: ``stop_reason()``: why the job must stop now (``None`` while it may go on); local only.
StopProbe = Callable[[], str | None]

_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


class JobContext(Mapping[str, Any]):
    """The job context of one engine: a read-only mapping plus progress and cancellation.

    ``values`` are the mapping's items; ``sink`` receives each validated
    progress report (without one the latest report per task is only kept in
    :attr:`progress_reports`); ``probe`` is asked by :meth:`cancelled` for
    stops this context was not told about (a conductor passes the board's
    local view of the claim).
    """

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        sink: ProgressSink | None = None,
        probe: StopProbe | None = None,
        board: Any = None,
    ) -> None:
        self._values = dict(values or {})
        #: The board the job runs on (None outside a conductor): child jobs go there.
        self.board = board
        self._sink = sink
        self._probe = probe
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], Any]] = []
        #: The latest progress report of each task, by task name.
        self.progress_reports: dict[str, dict[str, Any]] = {}

    # -- the mapping ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"JobContext({self._values!r})"

    # -- progress ------------------------------------------------------------

    def progress(
        self, fraction: float | None = None, message: str | None = None, **details: Any
    ) -> None:
        """Report how far the running task is: ``fraction`` in [0, 1], a message, JSON details.

        Raises ``ValueError`` naming the bad field; outside a task it does nothing.
        """
        task = current_task()
        if task is None:
            return
        report = _validate_progress(task, fraction, message, details)
        self.progress_reports[task] = report
        if self._sink is not None:
            self._sink(task, report)

    # -- cancellation --------------------------------------------------------

    @property
    def cancel_reason(self) -> str | None:
        """Why the job must stop (``"cancelled"``, ``"claim lost"``, ``"shutdown"``), or ``None``."""
        if self._reason is None and self._probe is not None:
            reason = self._probe()
            if reason is not None:
                self.signal_cancel(reason)
        return self._reason

    def cancelled(self) -> bool:
        """Whether the running task should stop now (a local check, no round trip)."""
        return self.cancel_reason is not None

    def check_cancelled(self) -> None:
        """Raise :class:`~conductor.exceptions.TaskCancelled` if :meth:`cancelled` is true."""
        reason = self.cancel_reason
        if reason is not None:
            task = current_task()
            where = f"task {task!r} of job {self.get('job_id')!r}" if task else "the task"
            raise TaskCancelled(f"{where} stopped: {reason}", reason)

    def on_cancel(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(reason)`` once when the job must stop (at once if it already must)."""
        with self._lock:
            reason = self._reason
            if reason is None:
                self._callbacks.append(callback)
                return
        _call(callback, reason)

    # -- child jobs ----------------------------------------------------------

    def post_child(
        self, name: str, flow: str, store: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Post a child job of the running job, once: see :func:`conductor.children.post_child`."""
        return children.post_child(self, name, flow, store, **options)

    def wait_for_children(self, timeout: float | None = None) -> list[Any]:
        """Wait for every child of the running job: see :func:`conductor.children.wait_for_children`."""
        return children.wait_for_children(self, timeout)

    def signal_cancel(self, reason: str) -> bool:
        """Tell the tasks of this context to stop; the first reason wins. True if it was new."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, reason)
        return True


def _call(callback: Callable[[str], Any], reason: str) -> None:
    try:
        callback(reason)
    except Exception:  # a task's callback must not break whoever signals the stop
        LOG.exception("on_cancel callback %s failed", callable_name(callback))


def _validate_progress(
    task: str, fraction: float | None, message: str | None, details: Mapping[str, Any]
) -> dict[str, Any]:
    where = f"progress of task {task!r}"
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValueError(f"{where}: 'fraction' must be a number in [0, 1], got {fraction!r}")
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"{where}: 'fraction' must be in [0, 1], got {fraction!r}")
        fraction = float(fraction)
    if message is not None:
        if not isinstance(message, str):
            raise ValueError(f"{where}: 'message' must be a string, got {type(message).__name__}")
        message = message[:MAX_MESSAGE]
    try:
        encoded = _JSON.encode(dict(details))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: 'details' must be JSON ({err})") from None
    if len(encoded) > MAX_DETAILS:
        raise ValueError(f"{where}: 'details' is {len(encoded)} bytes, at most {MAX_DETAILS}")
    return {"fraction": fraction, "message": message, "details": json.loads(encoded)}


class _EmptyContext(JobContext):
    """The context outside any engine: nothing to report to, nothing ever stops it."""

    def on_cancel(self, callback: Callable[[str], Any]) -> None:
        return None

    def signal_cancel(self, reason: str) -> bool:
        return False


#: The context outside any task: empty, never cancelled, progress ignored.
EMPTY: JobContext = _EmptyContext()

_current: ContextVar[JobContext] = ContextVar("conductor_context", default=EMPTY)
_current_task: ContextVar[str | None] = ContextVar("conductor_task", default=None)


def current() -> JobContext:
    """The context of the engine whose task is running, or :data:`EMPTY`."""
    return _current.get()


def current_task() -> str | None:
    """The name of the task running on this thread, or ``None``."""
    return _current_task.get()


def as_context(values: Mapping[str, Any] | None) -> JobContext:
    """``values`` as a :class:`JobContext` (unchanged if it already is one)."""
    if isinstance(values, JobContext):
        return values
    return JobContext(values) if values else EMPTY


def set_current(context: JobContext) -> Token[JobContext]:
    """Make ``context`` current; give the token to :func:`reset_current` to undo."""
    return _current.set(context)


def reset_current(token: Token[JobContext]) -> None:
    """Undo a :func:`set_current`."""
    _current.reset(token)


def set_task(name: str | None) -> Token[str | None]:
    """Mark ``name`` as the task running on this thread (the engine does it around ``execute``)."""
    return _current_task.set(name)


def reset_task(token: Token[str | None]) -> None:
    """Undo a :func:`set_task`."""
    _current_task.reset(token)


def progress(fraction: float | None = None, message: str | None = None, **details: Any) -> None:
    """:meth:`JobContext.progress` on the current context."""
    current().progress(fraction, message, **details)


def cancelled() -> bool:
    """:meth:`JobContext.cancelled` on the current context."""
    return current().cancelled()


def check_cancelled() -> None:
    """:meth:`JobContext.check_cancelled` on the current context."""
    current().check_cancelled()


def on_cancel(callback: Callable[[str], Any]) -> None:
    """:meth:`JobContext.on_cancel` on the current context."""
    current().on_cancel(callback)


def post_child(name: str, flow: str, store: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """:meth:`JobContext.post_child` on the current context."""
    return current().post_child(name, flow, store, **options)


def wait_for_children(timeout: float | None = None) -> list[Any]:
    """:meth:`JobContext.wait_for_children` on the current context."""
    return current().wait_for_children(timeout)
