"""The in-memory board's factory fixture."""

from __future__ import annotations

import pytest

import jobboard
from jobboard.memory import MemoryBoard
from tests.factory import BoardFactory


@pytest.fixture
def memory_board_factory():
    factory = BoardFactory("memory", lambda **o: jobboard.connect("memory://tests", **o))
    yield factory
    factory.close()
    MemoryBoard.reset(factory.namespace)
