"""The base of flow patterns: a named container of atoms and other flows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Self, Union

from conductor.atom import Atom

if TYPE_CHECKING:
    from conductor.retry import Retry

Node = Union[Atom, "Flow"]


class Flow:
    """A named group of atoms and subflows; patterns decide the order they run in.

    ``retry`` attaches a retry controller (:mod:`conductor.retry`) that runs
    before the flow's children and decides what happens when one fails.
    """

    def __init__(self, name: str, retry: Retry | None = None):
        if not isinstance(name, str) or not name:
            raise TypeError(f"flow name must be a non-empty string, got {name!r}")
        self.name = name
        self.retry = retry
        self._children: list[Node] = []

    def add(self, *items: Node) -> Self:
        """Add atoms or flows (in order); returns the flow so calls can be chained."""
        for item in items:
            if not isinstance(item, Atom | Flow):
                raise TypeError(f"flow {self.name!r} can only hold atoms and flows, got {item!r}")
            if item is self:
                raise ValueError(f"flow {self.name!r} cannot contain itself")
            self._children.append(item)
        return self

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._children)

    def iter_atoms(self) -> Iterator[Atom]:
        """Every atom below this flow (retry controllers included), depth first."""
        if self.retry is not None:
            yield self.retry
        for child in self._children:
            if isinstance(child, Flow):
                yield from child.iter_atoms()
            else:
                yield child
