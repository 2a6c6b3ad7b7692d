"""The dashboard under test: a real uvicorn server on a free loopback port, and HTTP helpers.

``dashboard`` serves one board (opened by the backend's factory fixture) from a
uvicorn server in a thread of the test process; ``web_board_factory`` is
parametrised over SQLite (events local only: changes of other processes are
found by the refresh), Redis (events pushed over pub/sub) and ZooKeeper
(watches; session-bound claims).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jobboard.base import JobBoard
from tests.helpers import wait_until
from tests.servers import free_port

pytest.importorskip("uvicorn", reason="the web extra is not installed")

from jobboard.admin.web.app import create_app  # noqa: E402 - needs the web extra
from jobboard.admin.web.server import make_server  # noqa: E402

TOKEN = "test-admin-token-0123456789"


class Response:
    """Status, headers and body of one HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Dashboard:
    """A running dashboard: ``get``/``post`` talk to it over HTTP on loopback."""

    def __init__(self, board: JobBoard, **options: Any) -> None:
        self.board = board
        self.port = free_port()
        self.app = create_app(board, label="test-board", **options)
        self.server = make_server(self.app, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    def start(self) -> Dashboard:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=20, message="dashboard started")
        return self

    def stop(self) -> None:
        self.server.request_stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the dashboard server did not stop"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            reply = conn.getresponse()
            return Response(reply.status, dict(reply.getheaders()), reply.read())
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, token: str | None = TOKEN) -> Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, body, headers)


class EventStream:
    """A reader of ``/api/stream``: yields ``(event name, data)`` pairs as they arrive."""

    def __init__(self, port: int, path: str = "/api/stream", timeout: float = 20.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path)
        self.reply = self.conn.getresponse()
        assert self.reply.status == 200
        assert self.reply.getheader("Content-Type", "").startswith("text/event-stream")

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        name, data = "message", []
        while True:
            line = self.reply.fp.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text.startswith("event:"):
                name = text[6:].strip()
            elif text.startswith("data:"):
                data.append(text[5:].strip())
            elif text == "" and data:
                yield name, json.loads("\n".join(data))
                name, data = "message", []

    def next_matching(self, predicate: Any, limit: int = 500) -> tuple[str, Any]:
        """The first message for which ``predicate(name, data)`` holds (bounded in count)."""
        for count, (name, data) in enumerate(self):
            if predicate(name, data):
                return name, data
            assert count < limit, "no matching message in the stream"
        raise AssertionError("the stream ended before a matching message")

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(params=["sqlite", "redis", "zookeeper"])
def web_board_factory(request: pytest.FixtureRequest):
    """Board factory of one backend (fresh namespace per test)."""
    return request.getfixturevalue(f"{request.param}_board_factory")


@pytest.fixture
def dashboards():
    """Start dashboards with ``dashboards(board, **options)``; all stopped after the test."""
    started: list[Dashboard] = []

    def start(board: JobBoard, **options: Any) -> Dashboard:
        options.setdefault("refresh", 0.3)
        dash = Dashboard(board, **options).start()
        started.append(dash)
        return dash

    yield start
    for dash in started:
        dash.stop()
