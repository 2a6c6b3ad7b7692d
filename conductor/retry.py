"""Retrying failed work: retry controllers for subflows, and retry policies for single tasks.

*Retry controllers* are atoms attached to a flow (``linear_flow.Flow("f",
retry=Times(3))``).  The controller runs before the flow's atoms and provides a
value to them; when one of them fails, the engine asks the innermost
controller what to do (:class:`Decision`):

* ``RETRY`` — revert the subflow, run the controller again (it may provide a
  new value), then run the subflow again;
* ``REVERT`` — revert the subflow and hand the failure to the enclosing
  controller (or fail the flow if there is none);
* ``REVERT_ALL`` — revert the whole flow, whatever the enclosing controllers say.

A *retry policy* (:class:`RetryPolicy`) retries a single task's ``execute``
in place, with backoff, without reverting anything: ``Task(retry_policy=
RetryPolicy(attempts=5, backoff=0.1))``.  It is built on tenacity's stop, wait
and retry strategies, so any of those can be passed in directly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from conductor.atom import Atom

if TYPE_CHECKING:
    import tenacity

    from conductor.failure import Failure

__all__ = [
    "REVERT",
    "REVERT_ALL",
    "RETRY",
    "AlwaysRevert",
    "AlwaysRevertAll",
    "Decision",
    "ForEach",
    "History",
    "ParameterizedForEach",
    "Retry",
    "RetryPolicy",
    "Times",
]


class Decision(enum.StrEnum):
    """What a retry controller wants done after a failure in its subflow."""

    RETRY = "RETRY"
    REVERT = "REVERT"
    REVERT_ALL = "REVERT_ALL"


RETRY = Decision.RETRY
REVERT = Decision.REVERT
REVERT_ALL = Decision.REVERT_ALL


class History:
    """The attempts of a retry controller: ``(value provided, {atom name: Failure})`` pairs."""

    __slots__ = ("_attempts",)

    def __init__(self, attempts: Iterable[tuple[Any, dict[str, Failure]]] = ()):
        self._attempts: list[tuple[Any, dict[str, Failure]]] = [(v, dict(f)) for v, f in attempts]

    def __len__(self) -> int:
        return len(self._attempts)

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Failure]]]:
        return iter(self._attempts)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Failure]]:
        return self._attempts[index]

    def values(self) -> list[Any]:
        """The values provided by each attempt, oldest first."""
        return [value for value, _ in self._attempts]

    def failures(self) -> list[Failure]:
        """Every failure recorded, oldest first."""
        return [f for _, failures in self._attempts for f in failures.values()]

    def caused_by(self, *exc_classes: type[BaseException]) -> bool:
        """Whether any recorded failure was one of ``exc_classes``."""
        return any(f.check(*exc_classes) for f in self.failures())

    def append(self, value: Any) -> None:
        """Start a new attempt that provided ``value``."""
        self._attempts.append((value, {}))

    def record_failure(self, atom_name: str, failure: Failure) -> None:
        """Add a failure to the current attempt."""
        if not self._attempts:
            self._attempts.append((None, {}))
        self._attempts[-1][1][atom_name] = failure

    def to_list(self) -> list[list[Any]]:
        """A JSON-serialisable form (values must be JSON themselves)."""
        return [[v, {n: f.to_dict() for n, f in fs.items()}] for v, fs in self._attempts]

    @classmethod
    def from_list(cls, data: Iterable[Sequence[Any]]) -> History:
        """Rebuild from :meth:`to_list` output."""
        from conductor.failure import Failure

        return cls((v, {n: Failure.from_dict(f) for n, f in fs.items()}) for v, fs in data)


class Retry(Atom):
    """Base of retry controllers: ``execute`` provides a value, ``on_failure`` decides.

    Both receive the :class:`History` as ``history`` plus their own arguments
    read from storage, as tasks do.  Takes the arguments of
    :class:`~conductor.atom.Atom` (``name``, ``provides``, ``requires``,
    ``rebind``, ``inject``) plus ``revert_all``, which makes giving up revert
    the whole flow instead of handing the failure to the enclosing controller.
    Subclasses take the same as keyword ``options``.
    """

    kind: ClassVar[str] = "retry"
    engine_args: ClassVar[Mapping[str, frozenset[str]]] = {
        "execute": frozenset(("history",)),
        "on_failure": frozenset(("history",)),
        "revert": frozenset(("history", "flow_failures")),
    }

    def __init__(self, *args: Any, revert_all: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.revert_all = revert_all

    @property
    def _give_up(self) -> Decision:
        return REVERT_ALL if self.revert_all else REVERT

    def execute(self, history: History, *args: Any, **kwargs: Any) -> Any:
        """The value provided to the subflow for the next attempt."""
        raise NotImplementedError

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        """Decide what to do after a failure in the subflow."""
        raise NotImplementedError

    def revert(self, history: History, *args: Any, **kwargs: Any) -> None:
        """Undo ``execute``; does nothing unless overridden."""
        return None

    def engine_callables(self) -> tuple[Any, Any]:
        """The callables the engine invokes for execute and revert."""
        return self.execute, self.revert


class AlwaysRevert(Retry):
    """Never retries: reverts the subflow and passes the failure on."""

    def execute(self, history: History, *args: Any, **kwargs: Any) -> None:
        return None

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return REVERT


class AlwaysRevertAll(Retry):
    """Never retries: reverts the whole flow."""

    def execute(self, history: History, *args: Any, **kwargs: Any) -> None:
        return None

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return REVERT_ALL


class Times(Retry):
    """Runs the subflow up to ``attempts`` times; provides the attempt number (1, 2, ...)."""

    def __init__(self, attempts: int = 1, name: str | None = None, **options: Any):
        if attempts < 1:
            raise ValueError(f"Times needs at least one attempt, got {attempts!r}")
        super().__init__(name, **options)
        self.attempts = attempts

    def execute(self, history: History, *args: Any, **kwargs: Any) -> int:
        return len(history) + 1

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return RETRY if len(history) < self.attempts else self._give_up


class _ValuesRetry(Retry):
    """Provides each value in turn until the subflow succeeds or values run out."""

    def _next(self, values: Sequence[Any], history: History) -> Any:
        tried = len(history)
        if tried >= len(values):
            raise ValueError(f"retry {self.name!r} has no values left ({len(values)} given)")
        return values[tried]

    def _decide(self, values: Sequence[Any], history: History) -> Decision:
        return RETRY if len(history) < len(values) else self._give_up


class ForEach(_ValuesRetry):
    """Tries the subflow with each of ``values`` in turn (a fixed list)."""

    def __init__(self, values: Sequence[Any], name: str | None = None, **options: Any):
        super().__init__(name, **options)
        self.values = list(values)

    def execute(self, history: History, *args: Any, **kwargs: Any) -> Any:
        return self._next(self.values, history)

    def on_failure(self, history: History, *args: Any, **kwargs: Any) -> Decision:
        return self._decide(self.values, history)


class ParameterizedForEach(_ValuesRetry):
    """Like :class:`ForEach`, with the values read from storage (``values``, or rebound)."""

    def execute(self, history: History, values: Sequence[Any]) -> Any:
        return self._next(values, history)

    def on_failure(self, history: History, values: Sequence[Any]) -> Decision:
        return self._decide(values, history)


class RetryPolicy:
    """How to retry one task's ``execute`` in place: attempts, backoff, which errors.

    ``attempts`` counts executions (1 = no retry).  The wait between attempts
    grows exponentially from ``backoff`` seconds up to ``max_backoff``, plus
    up to ``jitter`` random seconds.  ``retry_on`` lists the exception types
    worth retrying and ``deadline`` stops retrying after that many seconds.
    tenacity strategies passed as ``stop``, ``wait`` or ``retry`` replace the
    ones built from these numbers.  The engine waits between attempts without
    blocking other work, and a cancel or suspend ends the wait early.
    """

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: float = 0.0,
        max_backoff: float = 60.0,
        jitter: float = 0.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        deadline: float | None = None,
        stop: Any = None,
        wait: Any = None,
        retry: Any = None,
    ):
        if attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, got {attempts!r}")
        import tenacity  # loaded by the first policy: a daemon starts without it

        if stop is None:
            stop = tenacity.stop_after_attempt(attempts)
            if deadline is not None:
                stop = stop | tenacity.stop_after_delay(deadline)
        if wait is None:
            wait = tenacity.wait_none()
            if backoff > 0:
                wait = tenacity.wait_exponential(multiplier=backoff, max=max_backoff)
            if jitter > 0:
                wait = wait + tenacity.wait_random(0, jitter)
        if retry is None:
            retry = tenacity.retry_if_exception_type(retry_on)
        self.attempts = attempts
        self._retrying = tenacity.Retrying(stop=stop, wait=wait, retry=retry)

    def new_state(self) -> tenacity.RetryCallState:
        """A fresh tenacity call state for one task run."""
        import tenacity

        return tenacity.RetryCallState(self._retrying, None, (), {})

    def next_delay(self, state: tenacity.RetryCallState, error: BaseException) -> float | None:
        """Record a failed attempt; the seconds to wait before the next one, or ``None`` to stop."""
        state.set_exception((type(error), error, error.__traceback__))
        retrying = self._retrying
        if not retrying.retry(state) or retrying.stop(state):
            return None
        delay = float(retrying.wait(state))
        state.idle_for += delay
        state.prepare_for_next_attempt()
        return delay

    def __repr__(self) -> str:
        return f"RetryPolicy(attempts={self.attempts})"
