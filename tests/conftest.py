"""Shared fixtures: the board factories of every backend, each test in its own namespace.

Each backend has a plugin module ``tests/fixtures_<backend>.py`` defining a
``<backend>_board_factory`` fixture; the contract suite is parametrised over
every backend whose module exists.
"""

from __future__ import annotations

import importlib.util

import pytest

BACKENDS = [
    name
    for name in ("memory", "redis", "zookeeper", "sqlite")
    if importlib.util.find_spec(f"tests.fixtures_{name}") is not None
]

pytest_plugins = [f"tests.fixtures_{name}" for name in BACKENDS]


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
