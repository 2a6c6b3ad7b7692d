"""The real servers and the board factories of every backend: one fixtures module.

Registered as a pytest plugin by ``tests/conftest.py``. Each backend has a
``<backend>_board_factory`` fixture opening connected boards on one fresh
namespace per test; the contract suite runs over all of them.

* memory: the in-process board; nothing to start.
* redis: one ``redis-server`` per test session on a free loopback port
  (``CONDUCTOR_TEST_REDIS_URL`` points at an existing one instead; without the
  binary, testcontainers starts one where Docker runs), and private servers
  for kill / pause / restart tests.
* sqlite: a database file under the test's ``tmp_path``.
* zookeeper: Debian's ``zookeeper`` jars run with ``java`` on a free loopback
  port (``CONDUCTOR_TEST_ZOOKEEPER_HOSTS`` points at an existing one instead;
  without java, testcontainers starts one where Docker runs), private servers
  for fault tests, and :func:`expire_session`.

With ``CI=true`` a missing server fails the test; locally it skips loudly
(see :func:`tests.servers.missing_server`). Server logs are printed when a
test that started a private server fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient, KazooState

import jobboard
from jobboard.memory import MemoryBoard
from tests.factory import BoardFactory
from tests.servers import RedisServer, ZooKeeperServer, docker_available, missing_server

# -- memory -------------------------------------------------------------------

@pytest.fixture
def memory_board_factory():
    factory = BoardFactory("memory", lambda **o: jobboard.connect("memory://tests", **o))
    yield factory
    factory.close()
    MemoryBoard.reset(factory.namespace)


# -- redis --------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url():
    """URL of a Redis server for this session: env override, a local binary, or a container."""
    if os.environ.get("CONDUCTOR_TEST_REDIS_URL"):
        yield os.environ["CONDUCTOR_TEST_REDIS_URL"]
        return
    if RedisServer.binary():
        server = RedisServer()
        server.start()
        try:
            yield server.url
        finally:
            server.cleanup()
        return
    if docker_available():  # pragma: no cover - only where Docker runs
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    missing_server("redis-server")


@pytest.fixture
def redis_server_factory(request):
    """Start private redis-servers (for restart/kill/pause tests); cleaned up after the test."""
    if not RedisServer.binary():
        missing_server("redis-server")
    started: list[RedisServer] = []

    def start(**kwargs) -> RedisServer:
        server = RedisServer(**kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- redis log ({server.dir}) ---\n{server.logs()}")
        server.cleanup()


@pytest.fixture
def redis_board_factory(redis_url):
    factory = BoardFactory("redis", lambda **o: jobboard.connect(redis_url, **o))
    yield factory
    factory.close()


# -- sqlite -------------------------------------------------------------------


def sqlite_url(path: Path | str, **options: Any) -> str:
    """The board URL of a database file (absolute path) with query options."""
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"sqlite://{Path(path).resolve()}" + (f"?{query}" if query else "")


@pytest.fixture
def sqlite_path(tmp_path) -> Path:
    """The database file every SQLite board of a test shares."""
    return tmp_path / "board.db"


@pytest.fixture
def sqlite_board_factory(sqlite_path):
    factory = BoardFactory("sqlite", lambda **o: jobboard.connect(sqlite_url(sqlite_path), **o))
    yield factory
    factory.close()


# -- zookeeper ----------------------------------------------------------------

#: Session timeout of test boards, in seconds: short, so that expiry tests are quick.
TEST_SESSION_TIMEOUT = 4.0
CHROOT = "/conductor-tests"


def board_url(hosts: str, session_timeout: float = TEST_SESSION_TIMEOUT) -> str:
    return f"zookeeper://{hosts}{CHROOT}?session_timeout={session_timeout}"


def expire_session(client: KazooClient, hosts: str, timeout: float = 10.0) -> None:
    """Expire ``client``'s session the standard way: a second client joins the
    same session (id and password), then closes it. The first client then sees
    LOST and reconnects with a new session; its ephemeral nodes are gone."""
    lost = threading.Event()

    def watch(state: str) -> bool:
        if state == KazooState.LOST:
            lost.set()
            return True
        return False

    client.add_listener(watch)
    session_id, password = client.client_id
    intruder = KazooClient(hosts=hosts, client_id=(session_id, password), timeout=timeout)
    intruder.start(timeout=timeout)
    intruder.stop()
    intruder.close()
    if not lost.wait(timeout):
        client.remove_listener(watch)
        raise AssertionError(f"session 0x{session_id:x} did not expire within {timeout}s")


@pytest.fixture(scope="session")
def zookeeper_hosts() -> Iterator[str]:
    """``host:port`` of a ZooKeeper for this session: env override, java + jars, or a container."""
    if os.environ.get("CONDUCTOR_TEST_ZOOKEEPER_HOSTS"):
        yield os.environ["CONDUCTOR_TEST_ZOOKEEPER_HOSTS"]
        return
    if ZooKeeperServer.binary():
        server = ZooKeeperServer()
        server.start()
        try:
            yield server.hosts
        finally:
            server.cleanup()
        return
    if docker_available():  # pragma: no cover - only where Docker runs
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = DockerContainer("zookeeper:3.8").with_exposed_ports(2181)
        with container:
            wait_for_logs(container, "binding to port", timeout=60)
            host = container.get_container_host_ip()
            yield f"{host}:{container.get_exposed_port(2181)}"
        return
    missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")


@pytest.fixture(scope="session")
def zookeeper_url(zookeeper_hosts: str) -> str:
    """A board URL on the session's server, without a query (callers add options)."""
    return f"zookeeper://{zookeeper_hosts}{CHROOT}"


@pytest.fixture
def zookeeper_server_factory(request: pytest.FixtureRequest):
    """Start private ZooKeeper servers (for kill / pause / restart tests); cleaned up after."""
    if not ZooKeeperServer.binary():
        missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")
    started: list[ZooKeeperServer] = []

    def start(**kwargs) -> ZooKeeperServer:
        server = ZooKeeperServer(**kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    report = getattr(request.node, "rep_call", None)
    for server in started:
        if report is not None and report.failed:
            print(f"--- zookeeper log ({server.dir}) ---\n{server.logs()}")
        server.cleanup()


@pytest.fixture
def zookeeper_board_factory(zookeeper_hosts: str):
    """Open ZooKeeper boards, each with its own session, on this test's namespace."""
    url = board_url(zookeeper_hosts)
    factory = BoardFactory("zookeeper", lambda **o: jobboard.connect(url, **o))
    factory.hosts = zookeeper_hosts  # type: ignore[attr-defined]
    yield factory
    factory.close()
    _drop_namespace(zookeeper_hosts, factory.namespace)


def _drop_namespace(hosts: str, namespace: str) -> None:
    """Delete a test's nodes (best effort) so the shared server stays small."""
    client = KazooClient(hosts=hosts, timeout=TEST_SESSION_TIMEOUT)
    try:
        client.start(timeout=5)
        for path in (f"{CHROOT}/{namespace}", f"{CHROOT}/{namespace}-other"):
            if client.exists(path):
                client.delete(path, recursive=True)
    except Exception:  # noqa: BLE001 - cleanup must not fail a test
        pass
    finally:
        client.stop()
        client.close()
