"""Graph flow: children ordered by their data dependencies and explicit links."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from conductor.flow import Flow as _Flow
from conductor.flow import Node

Decider = Callable[[Mapping[str, Any]], bool]


class Flow(_Flow):
    """Runs a child after the children providing its inputs and after its linked ones.

    Cycles, and an input provided by two children, are rejected at load.
    """

    def __init__(self, name: str, retry: Any = None):
        super().__init__(name, retry)
        self._links: list[tuple[Node, Node, Decider | None]] = []

    def link(self, u: Node, v: Node, decider: Decider | None = None) -> Flow:
        """Run ``v`` after ``u``.

        With a ``decider``, once ``u`` is done it is called with the results
        of ``u``'s atoms (``{name: result}``); when it returns false ``v`` and
        everything after ``v`` in this flow are skipped (state ``IGNORE``).
        """
        for node in (u, v):
            if not any(node is child for child in self._children):
                raise ValueError(f"link: {node!r} is not a child of graph flow {self.name!r}")
        if u is v:
            raise ValueError(f"link: cannot link {u!r} to itself")
        self._links.append((u, v, decider))
        return self

    def iter_links(self) -> list[tuple[Node, Node, Decider | None]]:
        """The explicit links, as ``(u, v, decider)``."""
        return list(self._links)
