"""Flows by name: the only code a conductor will run.

A job names a flow; the conductor looks the name up here and builds a fresh
flow from the registered factory. Nothing named on the board is ever
imported: the operator chooses the modules (``--flows MODULE``) or installs
entry points (group ``conductor.flows``), and jobs can only pick among them.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["FlowRegistry", "RegistryError", "flow", "default_registry"]

ENTRY_POINT_GROUP = "conductor.flows"
LOG = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")

FlowFactory = Callable[..., Any]


class RegistryError(ValueError):
    """Raised when a flow name is invalid, duplicated, unknown, or a module has no flows."""


class FlowRegistry:
    """Maps flow names to factories returning a new flow for each job.

    A factory takes no argument, or one: the :class:`jobboard.Job` being run
    (for flows whose shape depends on the job's inputs).
    """

    def __init__(self, flows: Mapping[str, FlowFactory] | None = None) -> None:
        self._factories: dict[str, tuple[FlowFactory, bool]] = {}
        for name, factory in (flows or {}).items():
            self.add(name, factory)

    def add(self, name: str, factory: FlowFactory, *, replace: bool = False) -> None:
        """Register ``factory`` under ``name``."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RegistryError(f"flow name {name!r} must match {_NAME_RE.pattern}")
        if not callable(factory):
            raise RegistryError(f"flow {name!r}: factory {factory!r} is not callable")
        if name in self._factories and not replace:
            raise RegistryError(f"flow {name!r} is already registered")
        self._factories[name] = (factory, _takes_job(factory))

    def register(self, name: str | None = None) -> Callable[[FlowFactory], FlowFactory]:
        """Decorator: ``@registry.register("resize")`` on a flow factory."""

        def decorate(factory: FlowFactory) -> FlowFactory:
            self.add(name or factory.__name__, factory)
            return factory

        return decorate

    def update(self, other: FlowRegistry) -> None:
        """Add every flow of another registry."""
        for name, (factory, _) in other._factories.items():
            self.add(name, factory)

    def names(self) -> frozenset[str]:
        """The names of every registered flow."""
        return frozenset(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))

    def __len__(self) -> int:
        return len(self._factories)

    def build(self, name: str, job: Any = None) -> Any:
        """A new flow for a job; raises ``RegistryError`` for an unknown name."""
        try:
            factory, takes_job = self._factories[name]
        except KeyError:
            raise RegistryError(f"no flow named {name!r} is registered here") from None
        return factory(job) if takes_job else factory()

    @classmethod
    def from_module(cls, module_name: str) -> FlowRegistry:
        """Load the flows an operator-chosen module registers.

        The module provides a ``FLOWS`` registry or mapping; else every
        :class:`FlowRegistry` among its globals (``flows = FlowRegistry()``)
        is used; else the flows it registered with the :func:`flow` decorator
        on :data:`default_registry`.
        """
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001 - any error of the operator's module, in one line
            LOG.debug("importing flows module %s failed", module_name, exc_info=True)
            text = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise RegistryError(f"cannot import flows module {module_name!r}: {text}") from err
        found = getattr(module, "FLOWS", None)
        named = list(  # each registry once, even when bound to two names
            dict.fromkeys(
                value
                for value in vars(module).values()
                if isinstance(value, FlowRegistry) and value is not default_registry
            )
        )
        registry = cls()
        if isinstance(found, FlowRegistry):
            registry.update(found)
        elif isinstance(found, Mapping):
            for name, factory in found.items():
                registry.add(name, factory)
        elif named:
            for value in named:
                registry.update(value)
        else:
            for name, (factory, _) in default_registry._factories.items():
                if getattr(factory, "__module__", None) == module.__name__:
                    registry.add(name, factory)
        if not registry:
            raise RegistryError(
                f"module {module_name!r} registers no flows (define a FlowRegistry, FLOWS, "
                "or use @conductor.registry.flow)"
            )
        return registry

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> FlowRegistry:
        """Flows installed by packages under an entry point group (name -> factory)."""
        from importlib import metadata  # costs ~25 ms to import: only when asked for

        registry = cls()
        for ep in metadata.entry_points(group=group):
            registry.add(ep.name, ep.load())
        return registry


def _takes_job(factory: FlowFactory) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(factory).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 1


#: The registry that :func:`flow` adds to.
default_registry = FlowRegistry()


def flow(name: str | None = None) -> Callable[[FlowFactory], FlowFactory]:
    """Decorator registering a flow factory on :data:`default_registry`."""
    return default_registry.register(name)
