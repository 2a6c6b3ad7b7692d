"""A captured exception that survives a JSON round trip.

A :class:`Failure` keeps what an operator needs to understand an error raised
by a task (its type names, message and traceback text, and its cause chain) as
plain strings, so it can be stored with the job's progress and read back on
another machine.  While it is still in the process that caught it, it also
keeps the live exception, which the engine re-attaches as ``__cause__``.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, NoReturn

from conductor.exceptions import RemoteFailure

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
