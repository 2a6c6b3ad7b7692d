"""Helpers of the ZooKeeper board tests: node paths, and a hook that runs code
between a board's request and its answer (``raw``, a plain client, comes from
``tests/jobboard/conftest.py``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from jobboard.zookeeper import ZookeeperBoard
from tests.fixtures import CHROOT

pytestmark = pytest.mark.zookeeper


def node(board: ZookeeperBoard, *parts: str) -> str:
    """The path of a node of ``board``'s namespace."""
    return "/".join((CHROOT, board.namespace, *parts))


class Interleave:
    """Run ``between()`` right after the next request the calling thread sends
    through ``board``'s client, before the caller sees any answer: the request is
    on the wire (and ordered first on the server); the caller is held back."""

    def __init__(self, board: ZookeeperBoard, monkeypatch: pytest.MonkeyPatch) -> None:
        self.between: Callable[[], None] | None = None
        self.before = False
        self.fired = threading.Event()
        client = board.client
        original = client._call

        def call(request: Any, async_object: Any) -> Any:
            hook = self.between
            if hook is None or threading.get_ident() != self._thread:
                return original(request, async_object)
            self.between = None
            if self.before:
                hook()
                result = original(request, async_object)
            else:
                result = original(request, async_object)
                hook()
            self.fired.set()
            return result

        monkeypatch.setattr(client, "_call", call)
        self._thread = threading.get_ident()

    def arm(self, between: Callable[[], None], *, before: bool = False) -> None:
        """Run ``between`` after (or, with ``before``, just before) the next request."""
        self.between = between
        self.before = before
