"""Fixtures of the conductor process tests; each test module picks its backends with ``board_url``."""

from __future__ import annotations

import pytest

import jobboard
from tests.conductor.fleet import Fleet


@pytest.fixture
def board(board_url):
    """The test's own connection to the board the conductors use."""
    b = jobboard.connect(board_url)
    yield b
    b.close()


@pytest.fixture
def fleet(board_url, tmp_path, request):
    """Conductor processes on the test's board, stopped at the end (logs printed on failure)."""
    f = Fleet(board_url, tmp_path)
    yield f
    f.stop_all()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for name in f.procs:
            print(f"--- {name} ---\n{f.output(name)[-4000:]}")
