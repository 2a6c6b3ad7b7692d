"""Board-level metrics: ``/metrics`` of ``jobboard serve`` and ``jobboard metrics`` alone."""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from jobboard.base import unique_owner
from tests.fixtures import sqlite_url
from tests.helpers import wait_until
from tests.servers import free_port, port_open

ROOT = Path(__file__).resolve().parents[3]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fill(board) -> None:
    """Two flows: images (1 waiting, 1 claimed, 1 failed, 1 trashed, a conductor), reports."""
    owner = unique_owner("worker")
    board.register_entity(owner, "conductor", {"name": "worker", "flows": ["images"]})
    board.post("w", "images", {})
    claimed = board.post("c", "images", {})
    board.claim(claimed, owner)
    failed = board.post("f", "images", {})
    claim = board.claim(failed, owner)
    board.fail(failed, owner, claim.token, error="boom")
    trashed = board.post("t", "images", {})
    board.trash(trashed, "operator", force=True, reason="bad input")
    board.post("r1", "reports", {})
    board.post("r2", "reports", {})


def check(values: dict) -> None:
    flow = lambda name: (("flow", name),)  # noqa: E731
    assert values[("jobboard_board_up", ())] == 1.0
    assert values[("jobboard_jobs_waiting", flow("images"))] == 1.0
    assert values[("jobboard_jobs_waiting", flow("reports"))] == 2.0
    assert values[("jobboard_jobs_claimed", flow("images"))] == 1.0
    assert values[("jobboard_jobs_failed", flow("images"))] == 1.0
    assert values[("jobboard_jobs_trashed", flow("images"))] == 1.0
    assert values[("jobboard_conductors_live", flow("images"))] == 1.0
    assert values[("jobboard_conductors_live", flow("reports"))] == 0.0
    assert values[("jobboard_conductors", ())] == 1.0
    assert values[("jobboard_oldest_waiting_seconds", flow("reports"))] > 0.0


def test_dashboard_serves_board_metrics(web_board_factory, dashboards):
    board = web_board_factory()
    fill(board)
    dash = dashboards(board)
    reply = dash.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    check(samples(reply.body.decode()))


def test_metrics_command_alone(sqlite_board_factory, sqlite_path):
    board = sqlite_board_factory()
    fill(board)
    port = free_port()
    url = sqlite_url(sqlite_path, namespace=board.namespace)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobboard", "metrics", "--board", url, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.communicate()[0]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
        check(samples(body))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/metrics" in out
