"""Argument converters: functions that validate or transform a task's arguments.

A converter takes the task's arguments as a dict and returns a dict of the
values it changes (or ``None``).  Converters are registered per task and run
*before* the task (the default) or *after* it (then they see the arguments
plus the task's named outputs, and may change the outputs).  A converter may
name others it depends on; they run first.  Registration errors surface at
``engines.load()`` at the latest:

* :class:`~conductor.exceptions.NameDuplicationException` — two converters
  with one name in a register;
* :class:`~conductor.exceptions.MissingConverterDependencyError` — a
  dependency that is not registered (in the same phase);
* :class:`~conductor.exceptions.CircularDependencyException` — converters
  depending on each other in a cycle.

Example::

    @ConverterRegister.register_for_task(bake_cake)
    @SingleArgDecorator("message")
    def yell_loud(value):
        return value.upper()
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from conductor.exceptions import (
    ArgumentConversionException,
    CircularDependencyException,
    ConverterRegistrationException,
    MissingConverterDependencyError,
    NameDuplicationException,
)

__all__ = [
    "ArgumentConversionException",
    "CircularDependencyException",
    "ConverterRegister",
    "ConverterRegistrationException",
    "MissingConverterDependencyError",
    "NameDuplicationException",
    "SingleArgDecorator",
]

ConverterFn = Callable[[dict[str, Any]], Mapping[str, Any] | None]


class _Converter:
    __slots__ = ("name", "function", "pre_task", "dependencies")

    def __init__(self, name: str, function: ConverterFn, pre_task: bool, deps: tuple[str, ...]):
        self.name = name
        self.function = function
        self.pre_task = pre_task
        self.dependencies = deps


class ConverterRegister:
    """The converters of one task, in two phases (before and after the task)."""

    def __init__(self) -> None:
        self._converters: dict[str, _Converter] = {}
        self._orders: dict[bool, tuple[_Converter, ...]] = {}

    def __len__(self) -> int:
        return len(self._converters)

    def __contains__(self, name: object) -> bool:
        return name in self._converters

    def copy(self) -> ConverterRegister:
        """An independent register with the same converters."""
        other = ConverterRegister()
        other._converters = dict(self._converters)
        return other

    def register(self, *args: Any) -> Any:
        """Register a converter; usable directly or as a decorator.

        ``args`` by type: the converter function (at most one), a bool
        (at most one: ``True`` before the task, ``False`` after) and strings
        naming converters this one depends on.  Without a function among
        ``args`` a decorator is returned.
        """
        functions = [a for a in args if callable(a)]
        flags = [a for a in args if isinstance(a, bool)]
        deps = tuple(a for a in args if isinstance(a, str))
        others = [a for a in args if not (callable(a) or isinstance(a, bool | str))]
        if len(functions) > 1 or len(flags) > 1 or others:
            raise ConverterRegistrationException(
                "register() takes at most one function, at most one bool and dependency names; "
                f"got {args!r}"
            )
        pre_task = flags[0] if flags else True

        def add(fn: ConverterFn) -> ConverterFn:
            self._add(fn, pre_task, deps)
            return fn

        if functions:
            return add(functions[0])
        return add

    def _add(self, fn: ConverterFn, pre_task: bool, deps: tuple[str, ...]) -> None:
        name = getattr(fn, "__name__", repr(fn))
        if name in self._converters:
            raise NameDuplicationException(f"a converter named {name!r} is already registered")
        if name in deps:
            raise CircularDependencyException(f"converter {name!r} depends on itself")
        candidate = dict(self._converters)
        candidate[name] = _Converter(name, fn, pre_task, deps)
        _order(candidate, pre_task, missing_ok=True)
        self._converters = candidate
        self._orders = {}

    def get_visit_order(self, pre_task: bool = True) -> list[str]:
        """Converter names of one phase in the order they run (dependencies first)."""
        return [c.name for c in self._ordered(pre_task)]

    def _ordered(self, pre_task: bool) -> tuple[_Converter, ...]:
        order = self._orders.get(pre_task)
        if order is None:
            order = self._orders[pre_task] = _order(self._converters, pre_task, missing_ok=False)
        return order

    def convert(self, pre_task: bool = True, **kwargs: Any) -> dict[str, Any]:
        """Run the converters of one phase over ``kwargs``; returns the converted arguments."""
        return self.apply(kwargs, pre_task)

    def apply(
        self, values: Mapping[str, Any], pre_task: bool = True, task_name: str | None = None
    ) -> dict[str, Any]:
        """Like :meth:`convert`, naming ``task_name`` in a conversion error."""
        bag = dict(values)
        for conv in self._ordered(pre_task):
            try:
                changes = conv.function(bag)
            except Exception as err:
                where = f" of task {task_name!r}" if task_name else ""
                raise ArgumentConversionException(
                    f"converter {conv.name!r}{where} failed: {type(err).__name__}: {err}",
                    conv.name,
                    task_name,
                ) from err
            if changes:
                bag.update(changes)
        return bag

    @classmethod
    def register_for_task(cls, task: Any, pre_task: bool = True, *args: Any) -> Any:
        """Register a converter on ``task`` (a task object or a Task subclass).

        The task gets a register of its own on first use (a copy of the one it
        inherited, so registering on a subclass never changes its base).
        """
        own = vars(task).get("converters")
        if own is None:
            inherited = getattr(task, "converters", None)
            own = inherited.copy() if inherited is not None else cls()
            task.converters = own
        return own.register(pre_task, *args)


def _order(
    converters: Mapping[str, _Converter], pre_task: bool, missing_ok: bool
) -> tuple[_Converter, ...]:
    """Depth-first topological order of one phase, in registration order between equals."""
    phase = {n: c for n, c in converters.items() if c.pre_task is pre_task}
    missing = {
        c.name: [d for d in c.dependencies if d not in phase]
        for c in phase.values()
        if any(d not in phase for d in c.dependencies)
    }
    if missing and not missing_ok:
        when = "before" if pre_task else "after"
        listed = "; ".join(f"{n!r} needs {', '.join(map(repr, ds))}" for n, ds in missing.items())
        raise MissingConverterDependencyError(
            f"converter dependencies not registered (to run {when} the task): {listed}"
        )
    done: dict[str, _Converter] = {}
    path: list[str] = []

    def visit(conv: _Converter) -> None:
        if conv.name in done:
            return
        if conv.name in path:
            cycle = path[path.index(conv.name) :] + [conv.name]
            raise CircularDependencyException(
                "converters depend on each other in a cycle: " + " -> ".join(cycle)
            )
        path.append(conv.name)
        for dep in conv.dependencies:
            if dep in phase:
                visit(phase[dep])
        path.pop()
        done[conv.name] = conv

    for conv in phase.values():
        visit(conv)
    return tuple(done.values())


class SingleArgDecorator:
    """Make a one-value function into a converter of the named argument(s).

    The function receives the argument's value and returns its new value; it
    is only called for arguments present in the task's arguments.
    """

    def __init__(self, *arg_names: str):
        if not arg_names or not all(isinstance(a, str) for a in arg_names):
            raise ConverterRegistrationException("SingleArgDecorator needs argument names")
        self.arg_names = arg_names

    def __call__(self, fn: Callable[[Any], Any]) -> ConverterFn:
        names = self.arg_names

        @functools.wraps(fn)
        def converter(values: dict[str, Any]) -> dict[str, Any]:
            return {n: fn(values[n]) for n in names if n in values}

        return converter
