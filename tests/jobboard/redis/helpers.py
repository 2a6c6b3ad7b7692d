"""Helpers of the Redis board tests: namespaces, key prefixes, a raw client, an
ACL user, and a count of the requests a board sends.

Shared by ``tests/jobboard/test_redis.py`` and the modules of this folder, so
that each check is written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

import jobboard
from tests.servers import RedisServer

#: The ACL user :func:`acl_user_url` makes, and its password.
ACL_USER, ACL_PASSWORD = "conductor", "worker-pw"


def count_calls(board: Any, monkeypatch: pytest.MonkeyPatch, *names: str) -> dict[str, int]:
    """Count the calls of some of ``board``'s methods (the counts fill in as they come)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(board, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(board, name, counted)
    return calls


def namespace() -> str:
    """A fresh namespace for one test."""
    return f"t{uuid.uuid4().hex[:12]}"


def prefix(board: jobboard.JobBoard) -> str:
    """The key prefix of a Redis board."""
    return f"jb:{{{board.namespace}}}:"


def raw_client(url: str) -> Iterator[redis.Redis]:
    """A plain client on ``url``, to look at (and damage) keys; closed when the
    generator ends (the body of a ``raw`` fixture)."""
    client = redis.Redis.from_url(url)
    yield client
    client.close()


def acl_user_url(server: RedisServer) -> str:
    """Make an ACL user on ``server`` (started with a password) limited to the
    board's keys and channels and without admin commands; its board URL."""
    admin = redis.Redis(port=server.port, password=server.password)
    admin.acl_setuser(
        ACL_USER,
        enabled=True,
        passwords=[f"+{ACL_PASSWORD}"],
        keys=["jb:*"],
        channels=["jb:*"],
        commands=["+@all", "-@admin"],
    )
    admin.close()
    return f"redis://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0"


class RoundTrips:
    """How many requests a board's client sent: commands, script calls and
    pipelines (one each)."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def counting_round_trips(board: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    """Count the requests ``board`` sends inside the ``with`` block."""
    trips = RoundTrips()
    client = board._client
    execute, pipeline, evalsha = client.execute_command, client.pipeline, board._evalsha

    def counted_execute(*args: Any, **kwargs: Any) -> Any:
        trips.count += 1
        return execute(*args, **kwargs)

    def counted_evalsha(*args: Any, **kwargs: Any) -> Any:  # scripts sent by the board itself
        trips.count += 1
        return evalsha(*args, **kwargs)

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        run = pipe.execute

        def counted_run(*a: Any, **k: Any) -> Any:
            trips.count += 1
            return run(*a, **k)

        pipe.execute = counted_run
        return pipe

    pop_token = board._pop_token

    def counted_pop(*args: Any, **kwargs: Any) -> Any:
        trips.count += 1  # a block on the wake-up lists, over a connection of the pool
        return pop_token(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(client, "execute_command", counted_execute)
        patch.setattr(client, "pipeline", counted_pipeline)
        patch.setattr(board, "_evalsha", counted_evalsha)
        if getattr(client, "connection_pool", None) is not None:
            patch.setattr(board, "_pop_token", counted_pop)
        yield trips
