"""Boards for the admin tool's tests: real servers (``real_board``) and ``memory://``."""

from __future__ import annotations

import uuid

import pytest

import jobboard
from jobboard.memory import MemoryBoard


@pytest.fixture(params=["sqlite", "redis", "zookeeper"])
def real_board(request, tmp_path):
    """A board that ``python -m jobboard`` processes open too: (url, board).

    SQLite (a file under ``tmp_path``), Redis and ZooKeeper (the session's
    servers, a fresh namespace); Redis and ZooKeeper also push other
    processes' events to ``watch``.
    """
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path.resolve()}/board.db"
    else:
        base = request.getfixturevalue(f"{request.param}_url")
        url = f"{base}?namespace=cli{uuid.uuid4().hex[:12]}"
    board = jobboard.connect(url)
    yield url, board
    board.close()



@pytest.fixture
def memory_board():
    name = f"watch{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(f"memory://{name}")
    yield board
    board.close()
    MemoryBoard.reset(name)
