"""Helpers of the Redis board tests: private servers, raw clients, namespaces.

The servers and ``redis_server_factory`` / ``redis_url`` come from the
shared fixtures module of ``tests/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import jobboard
from tests.servers import RedisServer


def namespace() -> str:
    """A fresh namespace for one test."""
    return f"t{uuid.uuid4().hex[:12]}"


def prefix(board: jobboard.JobBoard) -> str:
    """The key prefix of a Redis board."""
    return f"jb:{{{board.namespace}}}:"


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the session's server, to look at (and damage) keys."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


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


class RoundTrips:
    """Counts the requests a Redis board's client sends: commands, script calls
    and pipelines (one each)."""

    def __init__(self, board: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        client = board._client
        execute, pipeline = client.execute_command, client.pipeline

        def counted_execute(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return execute(*args, **kwargs)

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            run = pipe.execute

            def counted_run(*a: Any, **k: Any) -> Any:
                self.count += 1
                return run(*a, **k)

            pipe.execute = counted_run
            return pipe

        monkeypatch.setattr(client, "execute_command", counted_execute)
        monkeypatch.setattr(client, "pipeline", counted_pipeline)
