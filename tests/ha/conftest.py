"""Fixtures of the failover tests: a fresh server group per test (a test may
kill one of its servers). A group's server logs are printed when its test fails."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ha.servers import RedisClusterGroup, SentinelGroup, ZooKeeperEnsemble
from tests.servers import RedisServer, ZooKeeperServer, missing_server


def _needs_redis() -> None:
    if not RedisServer.binary() or not shutil.which("redis-cli"):
        missing_server("redis-server and redis-cli")


def _run(group: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start ``group``, hand it to the test, print its logs if the test failed, clean up."""
    try:
        group.start()
        yield group
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(group.logs())
    except BaseException:
        print(group.logs())
        raise
    finally:
        group.cleanup()


@pytest.fixture
def sentinel_group(request):
    """A master, a replica and three sentinels."""
    _needs_redis()
    yield from _run(SentinelGroup(), request)


@pytest.fixture
def cluster_group(request):
    """A three-master cluster with a replica per master."""
    _needs_redis()
    yield from _run(RedisClusterGroup(), request)


@pytest.fixture
def zookeeper_ensemble(request):
    """A three-server ZooKeeper ensemble."""
    if not ZooKeeperServer.binary():
        missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")
    yield from _run(ZooKeeperEnsemble(), request)


@pytest.fixture(autouse=True)
def _stacks_on_abort(monkeypatch):
    """Conductors print every thread's stack on SIGABRT (sent to those still
    running when a test fails), to show where one hung."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
