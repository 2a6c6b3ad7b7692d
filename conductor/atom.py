"""The common base of tasks and retry controllers: names, inputs and outputs.

An atom reads its inputs by *name* from the engine's storage (the store given
to ``engines.load`` and the outputs of atoms that ran before it) and publishes
its result under the names in ``provides``.  Which names it reads comes from
the signatures of its methods, adjusted by:

* ``rebind`` — read a parameter from another name: ``{"param": "name"}``, or a
  list of names applied to the parameters in order;
* ``inject`` — give a parameter a fixed value instead of reading storage;
* ``requires`` — extra names, for methods taking ``**kwargs``.

Parameters with defaults are optional: they are passed when some atom or the
store provides them and left to their default otherwise.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Any, ClassVar

ProvidesSpec = str | Sequence[str] | Set[str] | None


def _read_signature(
    fn: Callable[..., Any], skip_first: bool
) -> tuple[tuple[tuple[str, bool], ...], bool]:
    """``((param, optional), ...)`` and whether ``fn`` takes ``**kwargs``."""
    params: list[tuple[str, bool]] = []
    var_kw = False
    items = list(inspect.signature(fn).parameters.values())
    if (
        skip_first
        and items
        and items[0].kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
    ):
        items = items[1:]
    for p in items:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"{getattr(fn, '__qualname__', fn)!r}: positional-only parameter {p.name!r} "
                "cannot be bound by name"
            )
        else:
            params.append((p.name, p.default is not inspect.Parameter.empty))
    return tuple(params), var_kw


MethodKey = tuple[tuple[str, Callable[..., Any], bool, frozenset[str]], ...]


class _Plan:
    """What an atom's methods accept, computed once per set of method functions."""

    __slots__ = ("specs", "params", "accepts_any", "optional", "identity")

    def __init__(self, methods: MethodKey):
        self.specs: dict[str, ArgSpec] = {}
        for method, fn, skip_first, reserved in methods:
            params, var_kw = _read_signature(fn, skip_first)
            kept = tuple(p for p, _ in params if p not in reserved)
            optional = frozenset(p for p, opt in params if opt and p not in reserved)
            accepted = reserved if var_kw else reserved.intersection(p for p, _ in params)
            self.specs[method] = ArgSpec(kept, optional, var_kw, accepted)
        ordered: list[str] = []
        for spec in self.specs.values():
            ordered.extend(p for p in spec.params if p not in ordered)
        self.params = tuple(ordered)
        self.accepts_any = any(spec.var_kw for spec in self.specs.values())
        self.optional = frozenset(
            p for p in ordered if all(p in s.optional for s in self.specs.values() if p in s.params)
        )
        self.identity = {p: p for p in ordered}


_cached_plan = functools.lru_cache(maxsize=4096)(_Plan)


def _plan(methods: MethodKey) -> _Plan:
    try:
        return _cached_plan(methods)
    except TypeError as err:  # an unhashable callable object: not cacheable
        if "unhashable" not in str(err):
            raise
        return _Plan(methods)


def normalize_provides(provides: ProvidesSpec) -> tuple[tuple[str, ...], bool]:
    """``(names, single)``: a string names the whole result; a sequence names its parts."""
    if provides is None:
        return (), False
    if isinstance(provides, str):
        return (provides,), True
    names = sorted(provides) if isinstance(provides, Set) else list(provides)
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"output names must be non-empty strings, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"output names repeat: {names!r}")
    return tuple(names), False


class ArgSpec:
    """The bindable parameters of one method.

    ``params`` are read from storage (``optional`` ones may be left to their
    defaults), ``var_kw`` tells whether it takes ``**kwargs`` and
    ``engine_params`` which engine-filled parameters it accepts.
    """

    __slots__ = ("params", "optional", "var_kw", "engine_params")

    def __init__(
        self,
        params: tuple[str, ...],
        optional: frozenset[str],
        var_kw: bool,
        engine_params: frozenset[str] = frozenset(),
    ):
        self.params = params
        self.optional = optional
        self.var_kw = var_kw
        self.engine_params = engine_params

    def select(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The subset of ``values`` this method accepts."""
        if self.var_kw:
            return dict(values)
        return {k: values[k] for k in self.params if k in values}


class Atom:
    """Something a flow runs: a :class:`~conductor.task.Task` or a retry controller.

    ``name`` must be unique within a flow (it defaults to the class name);
    ``provides`` names the result (a string) or its parts (a sequence of
    names, taken by key from a mapping result or by position from a sequence).
    """

    #: ``"task"`` or ``"retry"``: the kind named in notifications.
    kind: ClassVar[str] = "atom"
    #: Outputs used when ``provides`` is not given.
    default_provides: ClassVar[ProvidesSpec] = None
    #: Method name -> parameters the engine fills itself (never read from storage).
    engine_args: ClassVar[Mapping[str, frozenset[str]]] = {"execute": frozenset()}

    def __init__(
        self,
        name: str | None = None,
        provides: ProvidesSpec = None,
        requires: Iterable[str] | None = None,
        rebind: Mapping[str, str] | Sequence[str] | None = None,
        inject: Mapping[str, Any] | None = None,
    ):
        self.name = name if name is not None else self._default_name()
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"atom name must be a non-empty string, got {self.name!r}")
        names, single = normalize_provides(
            provides if provides is not None else self.default_provides
        )
        self.provides: tuple[str, ...] = names
        #: Whether the whole result is published under the single name in ``provides``.
        self.provides_single = single
        self.inject: dict[str, Any] = dict(inject or {})
        plan = _plan(
            tuple(
                (method, *self._method(method), reserved)
                for method, reserved in self.engine_args.items()
            )
        )
        self._plan = plan
        self._forced: frozenset[str] = frozenset(requires or ())
        if rebind is None and requires is None and not self.inject:
            self.rebind: dict[str, str] = dict(plan.identity)
        else:
            self.rebind = self._build_rebind(plan, rebind, requires)

    def _default_name(self) -> str:
        return type(self).__name__

    def _method(self, method: str) -> tuple[Callable[..., Any], bool]:
        """The function whose signature describes ``method``, and whether it has ``self``."""
        return getattr(type(self), method), True

    def _build_rebind(
        self,
        plan: _Plan,
        rebind: Mapping[str, str] | Sequence[str] | None,
        requires: Iterable[str] | None,
    ) -> dict[str, str]:
        params = list(plan.params)
        extra = []
        for name in requires or ():
            if name not in params:
                if not plan.accepts_any:
                    raise TypeError(
                        f"atom {self.name!r} requires {name!r} but none of its methods "
                        "takes that parameter or **kwargs"
                    )
                extra.append(name)
        mapping = {p: p for p in params + extra}
        if rebind is None:
            pass
        elif isinstance(rebind, Mapping):
            for param, name in rebind.items():
                if param not in mapping and not plan.accepts_any:
                    raise TypeError(f"atom {self.name!r} has no parameter {param!r} to rebind")
                mapping[param] = name
        else:
            order = params + extra
            if len(rebind) > len(order):
                raise TypeError(
                    f"atom {self.name!r}: {len(rebind)} rebind names for {len(order)} parameters"
                )
            for param, name in zip(order, rebind, strict=False):
                mapping[param] = name
        for param in self.inject:
            mapping.pop(param, None)
        return mapping

    def arg_spec(self, method: str = "execute") -> ArgSpec:
        """The parameters ``method`` accepts (without the engine-filled ones)."""
        return self._plan.specs[method]

    def is_optional(self, param: str) -> bool:
        """Whether ``param`` may be left to its default when nothing provides it."""
        return param in self._plan.optional and param not in self._forced

    @property
    def requires(self) -> frozenset[str]:
        """Storage names that must be available before this atom runs."""
        return frozenset(n for p, n in self.rebind.items() if not self.is_optional(p))

    @property
    def optional(self) -> frozenset[str]:
        """Storage names passed when available and left to defaults otherwise."""
        return frozenset(n for p, n in self.rebind.items() if self.is_optional(p))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
