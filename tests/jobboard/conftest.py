"""Fixtures of the jobboard tests: a plain ZooKeeper client to look at (and damage)
a ZooKeeper board's nodes directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient


@pytest.fixture
def raw(zookeeper_hosts: str) -> Iterator[KazooClient]:
    """A plain unauthenticated client on the session's ZooKeeper server."""
    client = KazooClient(hosts=zookeeper_hosts, timeout=4)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()
