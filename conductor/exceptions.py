"""Errors raised by the engine, its flows, tasks and converters.

One root, a shallow tree::

    ConductorError
    ├── InvalidFlow                       a flow that cannot be compiled
    │   ├── DuplicateAtomNames            two atoms share a name
    │   ├── DependencyCycle               a graph flow's links form a cycle
    │   └── MissingDependencies           inputs nobody provides (lists all of them)
    ├── ConverterRegistrationException    a converter was registered wrongly
    │   ├── CircularDependencyException
    │   ├── MissingConverterDependencyError
    │   └── NameDuplicationException
    ├── ArgumentConversionException       a converter raised while running
    ├── ResultNotSerializable             a result that is not JSON (with progress)
    ├── TaskTimeout                       a task ran longer than its timeout
    ├── NotFound                          no such value or atom in storage
    ├── InvalidState                      an illegal transition or engine misuse
    ├── RemoteFailure                     a failure restored from JSON, raised again
    ├── ExecutionFailure                  ``run()`` failed; names the task, holds the Failure
    │   └── RevertFailure                 undoing the work failed too
    ├── Cancelled                         ``run()`` was cancelled
    └── TaskCancelled                     raised inside a task by ``context.check_cancelled()``

An exception raised by a progress backend's ``save`` is not wrapped: it leaves
``run()`` as the very same object.

:class:`Failure` (also importable from :mod:`conductor.failure`) is how an
error is kept: a captured exception that survives a JSON round trip.  It lives
here, beside the errors that carry failures and the :class:`RemoteFailure` a
failure raises again, so that neither module imports the other.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn


class ConductorError(Exception):
    """Raised by the engine and its building blocks; the root of every engine error."""


class InvalidFlow(ConductorError, ValueError):
    """Raised when a flow cannot be compiled into something runnable."""


class DuplicateAtomNames(InvalidFlow):
    """Raised when two atoms of one flow share a name; ``names`` lists the duplicates."""

    def __init__(self, message: str, names: Sequence[str]):
        super().__init__(message)
        self.names = tuple(names)


class DependencyCycle(InvalidFlow):
    """Raised when the links and data dependencies of a graph flow form a cycle."""

    def __init__(self, message: str, names: Sequence[str]):
        super().__init__(message)
        self.names = tuple(names)


class MissingDependencies(InvalidFlow):
    """Raised when inputs are provided by neither the store nor an earlier atom.

    ``missing`` maps each atom name to the tuple of input names it lacks.
    """

    def __init__(self, message: str, missing: Mapping[str, Sequence[str]]):
        super().__init__(message)
        self.missing = {name: tuple(args) for name, args in missing.items()}


class ConverterRegistrationException(ConductorError, TypeError):
    """Raised when an argument converter is registered in a way that can never run."""


class CircularDependencyException(ConverterRegistrationException):
    """Raised when converters depend on each other in a cycle."""


class MissingConverterDependencyError(ConverterRegistrationException):
    """Raised when a converter depends on a converter that is not registered."""


class NameDuplicationException(ConverterRegistrationException):
    """Raised when two converters of one register share a name."""


class ArgumentConversionException(ConductorError):
    """Raised when an argument converter fails; names the converter and the task."""

    def __init__(self, message: str, converter: str, task_name: str | None = None):
        super().__init__(message)
        self.converter = converter
        self.task_name = task_name


class ResultNotSerializable(ConductorError, TypeError):
    """Raised when a task's result cannot be saved as JSON; names the task."""


class TaskTimeout(ConductorError, TimeoutError):
    """Raised when a task runs longer than its ``timeout``; the task thread is abandoned."""


class NotFound(ConductorError, LookupError):
    """Raised when storage has no value or atom by the requested name."""


class InvalidState(ConductorError):
    """Raised on an illegal state transition or when an engine is used in the wrong state."""


class RemoteFailure(ConductorError):
    """Raised by :meth:`Failure.reraise` when only the failure's text is known."""

    def __init__(self, failure: Failure):
        super().__init__(failure.pformat())
        self.failure = failure


class ExecutionFailure(ConductorError):
    """Raised by ``run()`` when a task failed and the flow was reverted.

    ``atom_name`` names the (first) failing atom, ``failure`` is its
    :class:`Failure` and ``failures`` maps every failed atom
    to its failure.  The original exception is the ``__cause__`` when it is
    still available (it is not after a failure was restored from JSON).
    """

    def __init__(self, message: str, atom_name: str, failures: Mapping[str, Failure]):
        super().__init__(message)
        self.atom_name = atom_name
        self.failures = dict(failures)
        self.failure = self.failures[atom_name]


class RevertFailure(ExecutionFailure):
    """Raised by ``run()`` when undoing failed (or cancelled) work failed.

    ``atom_name`` and ``failure`` name the atom whose revert raised (now in
    ``REVERT_FAILURE``; the flow ends in ``FAILURE``); ``flow_failures`` maps
    the atoms whose failure started the revert (empty after a cancel).
    """

    def __init__(
        self,
        message: str,
        atom_name: str,
        revert_failures: Mapping[str, Failure],
        flow_failures: Mapping[str, Failure] | None = None,
    ):
        super().__init__(message, atom_name, revert_failures)
        self.flow_failures = dict(flow_failures or {})


class Cancelled(ConductorError):
    """Raised by ``run()`` after ``cancel()``: nothing more was started and work was undone.

    ``atom_name`` names the atom whose transition the cancellation took effect
    at (``None`` when no atom had moved yet) and ``reason`` is the caller's text.
    """

    def __init__(
        self,
        message: str,
        atom_name: str | None,
        reason: str | None = None,
        failures: Mapping[str, Failure] | None = None,
    ):
        super().__init__(message)
        self.atom_name = atom_name
        self.reason = reason
        self.failures = dict(failures or {})



class TaskCancelled(ConductorError):
    """Raised inside a task by ``context.check_cancelled()`` once its job must stop.

    ``reason`` says why: ``"cancelled"`` (the job was cancelled: the engine
    reverts and the job ends cancelled), ``"claim lost"`` or ``"shutdown"``
    (the engine stops without reverting, the task counts as not run and the
    next owner runs it again).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# -- captured failures ------------------------------------------------------------------

_FORMAT_VERSION = 1
_MAX_CAUSES = 8

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def type_name(cls: type) -> str:
    """The name a failure records for an exception class (builtins stay short)."""
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


class Failure:
    """An exception captured as strings (type names, message, traceback), plus its cause."""

    __slots__ = ("exception", "exc_type_names", "exception_str", "traceback_str", "cause")

    def __init__(
        self,
        exc_type_names: tuple[str, ...],
        exception_str: str,
        traceback_str: str = "",
        cause: Failure | None = None,
        exception: BaseException | None = None,
    ):
        self.exc_type_names = exc_type_names
        self.exception_str = exception_str
        self.traceback_str = traceback_str
        self.cause = cause
        #: The live exception, only in the process that caught it.
        self.exception = exception

    @classmethod
    def from_exception(cls, exc: BaseException, _depth: int = 0) -> Failure:
        """Capture ``exc`` (with its traceback and the chain of its causes)."""
        names = tuple(type_name(c) for c in type(exc).__mro__ if issubclass(c, BaseException))
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
        nested = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        cause = None
        if nested is not None and _depth < _MAX_CAUSES:
            cause = cls.from_exception(nested, _depth + 1)
        return cls(names, str(exc), text, cause, exc)

    @property
    def exception_type_name(self) -> str:
        """The name of the exception's own class."""
        return self.exc_type_names[0]

    @property
    def exc_info(self) -> ExcInfo | None:
        """A ``(type, value, traceback)`` triple while the live exception is known."""
        exc = self.exception
        if exc is None:
            return None
        return (type(exc), exc, exc.__traceback__)

    def check(self, *exc_classes: type[BaseException]) -> type[BaseException] | None:
        """Return the first of ``exc_classes`` the captured exception is an instance of."""
        for cls in exc_classes:
            if type_name(cls) in self.exc_type_names:
                return cls
        return None

    def iter_causes(self) -> Iterator[Failure]:
        """The causes of this failure, nearest first."""
        cause = self.cause
        while cause is not None:
            yield cause
            cause = cause.cause

    def reraise(self) -> NoReturn:
        """Raise the live exception, or a :class:`RemoteFailure` describing it."""
        if self.exception is not None:
            raise self.exception
        raise RemoteFailure(self)

    def pformat(self, traceback: bool = False) -> str:
        """A readable description, with the traceback text when asked for."""
        text = f"{self.exception_type_name}: {self.exception_str}"
        if traceback and self.traceback_str:
            text = f"{text}\n{self.traceback_str.rstrip()}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; :meth:`from_dict` reverses it."""
        return {
            "version": _FORMAT_VERSION,
            "exc_type_names": list(self.exc_type_names),
            "exception_str": self.exception_str,
            "traceback_str": self.traceback_str,
            "cause": self.cause.to_dict() if self.cause is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Failure:
        """Rebuild a failure saved by :meth:`to_dict` (without the live exception)."""
        cause = data.get("cause")
        return cls(
            tuple(data["exc_type_names"]),
            data["exception_str"],
            data.get("traceback_str", ""),
            cls.from_dict(cause) if cause else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failure):
            return NotImplemented
        return (
            self.exc_type_names == other.exc_type_names
            and self.exception_str == other.exception_str
            and self.traceback_str == other.traceback_str
            and self.cause == other.cause
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return f"Failure: {self.pformat()}"

    def __repr__(self) -> str:
        return f"Failure({self.exception_type_name}: {self.exception_str!r})"
