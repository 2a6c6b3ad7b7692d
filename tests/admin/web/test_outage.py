"""The dashboard through a board outage: a private redis-server stopped and started again."""

from __future__ import annotations

import jobboard
from tests.admin.web.conftest import EventStream
from tests.helpers import wait_until


def test_outage_is_reported_and_the_view_recovers(redis_server_factory, dashboards):
    server = redis_server_factory(persistent=True)
    board = jobboard.connect(server.url, namespace="outage", retry_deadline=0.5)
    try:
        job = board.post("before", "f", {})
        dash = dashboards(board)
        stream = EventStream(dash.port)
        stream.next_matching(lambda n, d: n == "overview")

        # When the server goes away, open pages are told, and the API answers 503.
        server.stop()
        _, problem = stream.next_matching(lambda n, d: n == "problem")
        assert problem["error"].startswith("board unreachable, retrying")
        wait_until(lambda: dash.get("/api/overview").status == 503, timeout=15)
        error = dash.get("/api/overview").json()["error"]
        assert error["code"] == "unavailable" and "board unreachable" in error["message"]

        # When it is back, the same stream carries fresh overviews again.
        server.start()
        _, overview = stream.next_matching(
            lambda n, d: n == "overview" and [j["id"] for j in d["waiting"]] == [job.id]
        )
        assert overview["totals"]["waiting"] == 1
        assert dash.get("/api/overview").status == 200
        stream.close()
    finally:
        board.close()
