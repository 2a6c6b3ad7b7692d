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
    └── Cancelled                         ``run()`` was cancelled

An exception raised by a progress backend's ``save`` is not wrapped: it leaves
``run()`` as the very same object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conductor.failure import Failure


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
    """Raised by :meth:`Failure.reraise <conductor.failure.Failure.reraise>` when only its text is known."""

    def __init__(self, failure: Failure):
        super().__init__(failure.pformat())
        self.failure = failure


class ExecutionFailure(ConductorError):
    """Raised by ``run()`` when a task failed and the flow was reverted.

    ``atom_name`` names the (first) failing atom, ``failure`` is its
    :class:`~conductor.failure.Failure` and ``failures`` maps every failed atom
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
