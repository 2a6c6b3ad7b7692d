"""Fixtures of the failover tests: server groups started once per module, and
conductor fleets (real ``conductor run`` processes) on their boards.

A group's server logs are printed when a test using it fails.
"""

from __future__ import annotations

import shutil

import pytest

from tests.ha.servers import RedisClusterGroup, SentinelGroup, ZooKeeperEnsemble
from tests.servers import RedisServer, ZooKeeperServer, missing_server


def _needs_redis() -> None:
    if not RedisServer.binary() or not shutil.which("redis-cli"):
        missing_server("redis-server and redis-cli")


def _started(group, request):
    try:
        group.start()
    except BaseException:
        print(group.logs())
        group.cleanup()
        raise
    return group


@pytest.fixture
def sentinel_group(request):
    """A fresh master, replica and three sentinels (a test may kill the master)."""
    _needs_redis()
    group = _started(SentinelGroup(), request)
    yield group
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(group.logs())
    group.cleanup()


@pytest.fixture
def cluster_group(request):
    """A fresh three-master cluster with a replica per master."""
    _needs_redis()
    group = _started(RedisClusterGroup(), request)
    yield group
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(group.logs())
    group.cleanup()


@pytest.fixture
def zookeeper_ensemble(request):
    """A fresh three-server ZooKeeper ensemble."""
    if not ZooKeeperServer.binary():
        missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")
    group = _started(ZooKeeperEnsemble(), request)
    yield group
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(group.logs())
    group.cleanup()


@pytest.fixture(autouse=True)
def _stacks_on_abort(monkeypatch):
    """Conductors print every thread's stack on SIGABRT (sent to those still
    running when a test fails), to show where one hung."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
