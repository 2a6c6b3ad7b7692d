"""Fixtures of the Redis board tests: a raw client, boards closed after the test.

The servers and ``redis_server_factory`` / ``redis_url`` come from the
shared fixtures module of ``tests/``; plain helpers live in ``helpers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

import jobboard
from tests.jobboard.redis.helpers import namespace, raw_client
from tests.servers import RedisServer


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the session's server, to look at (and damage) keys."""
    yield from raw_client(redis_url)


@pytest.fixture
def open_board() -> Iterator[Any]:
    """``open_board(server_or_url, **options)``: a connected board, closed after the test."""
    opened: list[jobboard.JobBoard] = []

    def opener(where: RedisServer | str, **options: Any) -> jobboard.JobBoard:
        url = where.url if isinstance(where, RedisServer) else where
        options.setdefault("namespace", namespace())
        board = jobboard.connect(url, **options)
        opened.append(board)
        return board

    yield opener
    for board in opened:
        try:
            board.close()
        except Exception:  # noqa: BLE001 - teardown closes the rest
            pass
