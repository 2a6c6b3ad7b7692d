"""Tasks: the units of work a flow runs.

Subclass :class:`Task` and implement ``execute`` (and ``revert`` to undo it
when the flow fails), or turn a plain function into a task with :func:`task`::

    @task(provides="total")
    def add(x, y):
        return x + y

    add(1, 2)                      # still a plain call: 3
    linear_flow.Flow("f").add(add)  # and a task inside flows

:func:`returns` names the outputs of a function returning a mapping or a
tuple, so later tasks can ask for each part by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from conductor.atom import Atom, ProvidesSpec

if TYPE_CHECKING:
    from conductor.converters import ConverterRegister
    from conductor.retry import RetryPolicy

__all__ = ["FunctionTask", "Task", "returns", "task"]

_RETURNS_ATTR = "__conductor_returns__"

F = TypeVar("F", bound=Callable[..., Any])


class Task(Atom):
    """A unit of work with an ``execute`` method and an optional ``revert``.

    ``execute``'s parameters are read from storage by name (see
    :mod:`conductor.atom` for ``rebind``/``inject``/``requires``).  ``revert``
    gets the same arguments plus ``result`` (what ``execute`` returned, or the
    :class:`~conductor.failure.Failure` it raised) and ``flow_failures``
    (every failure of the flow by atom name) when it declares them.

    ``retry_policy`` retries a failing ``execute`` in place with backoff
    (:class:`~conductor.retry.RetryPolicy`), ``timeout`` fails it with
    :class:`~conductor.exceptions.TaskTimeout` after that many seconds, and
    ``converters`` transforms its arguments before (and outputs after) it runs.
    """

    kind: ClassVar[str] = "task"
    engine_args: ClassVar[Mapping[str, frozenset[str]]] = {
        "execute": frozenset(),
        "revert": frozenset(("result", "flow_failures")),
    }
    #: Converters of every instance of the class (see :mod:`conductor.converters`).
    converters: ConverterRegister | None = None

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: Iterable[str] | None = None,
        rebind: Mapping[str, str] | Sequence[str] | None = None,
        inject: Mapping[str, Any] | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
        converters: ConverterRegister | None = None,
    ):
        super().__init__(name, provides, requires, rebind, inject)
        if timeout is not None and timeout <= 0:
            raise ValueError(f"task {self.name!r}: timeout must be positive, got {timeout!r}")
        self.retry_policy = retry_policy
        self.timeout = timeout
        if converters is not None:
            self.converters = converters

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; the return value is published under ``provides``."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    def revert(self, *args: Any, **kwargs: Any) -> Any:
        """Undo ``execute`` after a failure; does nothing unless overridden."""
        return None

    @property
    def has_revert(self) -> bool:
        """Whether reverting this task calls anything."""
        return type(self).revert is not Task.revert

    def engine_callables(self) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        """The callables the engine invokes for execute and revert (``None``: nothing to undo)."""
        return self.execute, self.revert if self.has_revert else None


class FunctionTask(Task):
    """A task running a plain function; calling the object calls the function.

    Made by :func:`task`; ``revert`` is an optional function taking the same
    arguments (plus ``result``/``flow_failures`` if it declares them).
    """

    def __init__(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: Iterable[str] | None = None,
        rebind: Mapping[str, str] | Sequence[str] | None = None,
        inject: Mapping[str, Any] | None = None,
        *,
        revert: Callable[..., Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
        converters: ConverterRegister | None = None,
    ):
        if not callable(function):
            raise TypeError(f"task() needs a callable, got {function!r}")
        self.function = function
        self.revert_function = revert
        if provides is None:
            provides = getattr(function, _RETURNS_ATTR, None)
        super().__init__(
            name,
            provides,
            requires,
            rebind,
            inject,
            retry_policy=retry_policy,
            timeout=timeout,
            converters=converters,
        )
        functools.update_wrapper(self, function, updated=())
        self._options = {
            "name": name,
            "provides": provides,
            "requires": requires,
            "rebind": rebind,
            "inject": inject,
            "revert": revert,
            "retry_policy": retry_policy,
            "timeout": timeout,
            "converters": converters,
        }

    def _default_name(self) -> str:
        return getattr(self.function, "__name__", type(self.function).__name__)

    def _method(self, method: str) -> tuple[Callable[..., Any], bool]:
        if method == "execute":
            return self.function, False
        if self.revert_function is not None:
            return self.revert_function, False
        return _no_revert, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly: a plain result, no engine involved."""
        return self.function(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def revert(self, *args: Any, **kwargs: Any) -> Any:
        if self.revert_function is None:
            return None
        return self.revert_function(*args, **kwargs)

    @property
    def has_revert(self) -> bool:
        return self.revert_function is not None

    def engine_callables(self) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        return self.function, self.revert_function

    def copy(self, **changes: Any) -> FunctionTask:
        """A new task for the same function with some options changed (e.g. ``name=``)."""
        unknown = set(changes) - set(self._options)
        if unknown:
            raise TypeError(f"unknown task options: {sorted(unknown)}")
        options = {**self._options, **changes}
        copied = FunctionTask(self.function, **options)
        if "converters" not in changes and "converters" in vars(self):
            copied.converters = self.converters.copy() if self.converters else None
        return copied

    def __repr__(self) -> str:
        return f"<FunctionTask {self.name!r} of {self.function!r}>"


def _no_revert() -> None:
    return None


@overload
def task(function: Callable[..., Any], /, **options: Any) -> FunctionTask: ...
@overload
def task(
    function: None = None, /, **options: Any
) -> Callable[[Callable[..., Any]], FunctionTask]: ...


def task(
    function: Callable[..., Any] | None = None, /, **options: Any
) -> FunctionTask | Callable[[Callable[..., Any]], FunctionTask]:
    """Turn a function into a :class:`FunctionTask` (``@task()``, ``@task`` or ``task(fn)``).

    ``options`` are those of :class:`FunctionTask`: ``name``, ``provides``,
    ``requires``, ``rebind``, ``inject``, ``revert``, ``retry_policy``,
    ``timeout``, ``converters``.  The task stays directly callable.
    """
    if function is not None:
        return FunctionTask(function, **options)

    def decorate(fn: Callable[..., Any]) -> FunctionTask:
        return FunctionTask(fn, **options)

    return decorate


def returns(*names: str) -> Callable[[F], F]:
    """Name the outputs of a task: its result is a mapping with those keys or a tuple of them.

    Works on a function (before or after :func:`task`) and on a :class:`Task`
    subclass (setting its ``default_provides``).
    """
    if not names:
        raise TypeError("returns() needs at least one output name")

    def decorate(obj: F) -> F:
        if isinstance(obj, FunctionTask):
            return obj.copy(provides=names)  # type: ignore[return-value]
        if isinstance(obj, type) and issubclass(obj, Task):
            obj.default_provides = names
            return obj
        setattr(obj, _RETURNS_ATTR, names)
        return obj

    return decorate
