"""A board factory for tests: every board it opens shares one fresh namespace."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from jobboard import JobBoard


class BoardFactory:
    """Open connected boards on one per-test namespace; close them all at the end."""

    def __init__(self, backend: str, opener: Callable[..., JobBoard], server: Any = None) -> None:
        self.backend = backend
        self.namespace = f"t{uuid.uuid4().hex[:12]}"
        self._opener = opener
        self.server = server
        self.boards: list[JobBoard] = []

    def __call__(self, **options: Any) -> JobBoard:
        options.setdefault("namespace", self.namespace)
        board = self._opener(**options)
        self.boards.append(board)
        return board

    def close(self) -> None:
        for board in self.boards:
            try:
                board.close()
            except Exception:  # noqa: BLE001 - teardown must close the rest
                pass
