"""A real redis-server per test session, and the Redis board's factory fixture."""

from __future__ import annotations

import os

import pytest

import jobboard
from tests.factory import BoardFactory
from tests.servers import RedisServer, docker_available, missing_server


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
