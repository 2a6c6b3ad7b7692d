"""Servers for the property tests: one private redis-server and one ZooKeeper per session.

Each is private because the tests restart it (``kill -9``) while boards are open.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.properties.backends import RedisEnv, ZooKeeperEnv
from tests.servers import RedisServer, ZooKeeperServer, missing_server


@pytest.fixture(scope="session")
def redis_env() -> Iterator[RedisEnv]:
    if not RedisServer.binary():
        missing_server("redis-server")
    env = RedisEnv()
    yield env
    env.close()


@pytest.fixture(scope="session")
def zookeeper_env() -> Iterator[ZooKeeperEnv]:
    if not ZooKeeperServer.binary():
        missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")
    env = ZooKeeperEnv()
    yield env
    env.close()
