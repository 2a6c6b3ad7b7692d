"""Shared fixtures: the board factories of every backend, each test in its own namespace.

The servers and the ``<backend>_board_factory`` fixtures live in one plugin
module, ``tests/fixtures.py``; ``board_factory`` (and so the contract suite)
is parametrised over every backend.
"""

from __future__ import annotations

import logging

import pytest

BACKENDS = ["memory", "redis", "zookeeper", "sqlite"]

pytest_plugins = ["tests.fixtures"]


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """Undo what an in-process ``conductor run`` does to the root logger (its level and
    handlers), so a later test's ``caplog`` still sees warnings."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(params=BACKENDS)
def board_factory(request: pytest.FixtureRequest):
    """A callable opening connected boards of one backend on this test's namespace."""
    return request.getfixturevalue(f"{request.param}_board_factory")


@pytest.fixture
def board(board_factory):
    """One connected board on a fresh namespace."""
    return board_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so fixtures can print server logs on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
