"""Conductor metrics: the Prometheus exposition and the health endpoint, scraped over HTTP."""

from __future__ import annotations

import http.client

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conductor.metrics import ConductorMetrics, HealthCheck

EVENTS = ["claimed", "consumed", "failed", "abandoned", "trashed", "cancelled", "claim_lost",
          "resumed"]  # fmt: skip
COUNTERS = {
    "claimed": "conductor_jobs_claimed",
    "consumed": "conductor_jobs_consumed",
    "failed": "conductor_jobs_failed",
    "abandoned": "conductor_jobs_abandoned",
    "trashed": "conductor_jobs_trashed",
    "cancelled": "conductor_jobs_cancelled",
    "claim_lost": "conductor_claim_losses",
    "resumed": "conductor_resumes",
}


def get(port: int, path: str) -> tuple[int, str, str]:
    """GET http://127.0.0.1:port/path: (status, content type, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics():
    m = ConductorMetrics()
    yield m
    m.stop()


def test_metrics_endpoint_exposes_every_series(metrics):
    port = metrics.serve(0, health=lambda: (True, "ok"))
    for i, kind in enumerate(EVENTS):
        for _ in range(i + 1):
            assert metrics.on_event(kind, flow="billing")
    metrics.on_event("claim lost")  # other spellings, no flow
    metrics.observe_task("billing", "charge", 0.3)
    metrics.observe_task("billing", "charge", 7.0)
    metrics.observe_renewal(0.002)
    metrics.set_running(3)
    metrics.board_error("unavailable")
    metrics.board_error("unavailable")

    status, content_type, body = get(port, "/metrics")

    assert status == 200 and content_type.startswith("text/plain")
    found = samples(body)
    for i, kind in enumerate(EVENTS):
        assert found[(f"{COUNTERS[kind]}_total", (("flow", "billing"),))] == i + 1, kind
    assert found[("conductor_claim_losses_total", (("flow", "unknown"),))] == 1
    assert found[("conductor_running_jobs", ())] == 3
    assert found[("conductor_board_errors_total", (("kind", "unavailable"),))] == 2
    task = (("flow", "billing"), ("task", "charge"))
    assert found[("conductor_task_duration_seconds_count", task)] == 2
    assert found[("conductor_task_duration_seconds_sum", task)] == pytest.approx(7.3)
    assert found[("conductor_task_duration_seconds_bucket", (*task[:1], ("le", "0.5"), task[1]))]
    assert found[("conductor_lease_renewal_seconds_count", ())] == 1
    assert port == metrics.port and port > 0


def test_healthz_is_200_when_healthy_and_503_with_the_reason_otherwise(metrics):
    state = {"ok": True, "reason": "ok"}
    port = metrics.serve(0, health=lambda: (state["ok"], state["reason"]))

    healthy = get(port, "/healthz")
    state.update(ok=False, reason="last heartbeat 31.0s ago (limit 15s)")
    sick = get(port, "/healthz")

    assert healthy[0] == 200 and healthy[2].strip() == "ok"
    assert sick[0] == 503 and sick[2].strip() == "last heartbeat 31.0s ago (limit 15s)"


def test_a_failing_probe_is_unhealthy_and_unknown_paths_404(metrics):
    def broken() -> tuple[bool, str]:
        raise RuntimeError("board handle gone")

    port = metrics.serve(0, health=broken)

    status, _, body = get(port, "/healthz")
    missing = get(port, "/nothing")

    assert status == 503 and "board handle gone" in body
    assert missing[0] == 404


def test_health_check_follows_heartbeats_and_the_board_connection():
    now = [100.0]

    class Board:
        connected = True

    board = Board()
    check = HealthCheck(board, max_heartbeat_age=10.0, clock=lambda: now[0])

    fresh = check()
    now[0] += 11
    stale = check()
    check.beat()
    beaten = check()
    board.connected = False
    down = check()

    assert fresh == (True, "ok") and beaten == (True, "ok")
    assert stale[0] is False and "last heartbeat 11.0s ago" in stale[1]
    assert down == (False, "board connection is down")


def test_health_check_served_end_to_end(metrics):
    now = [0.0]
    check = HealthCheck(max_heartbeat_age=5.0, clock=lambda: now[0])
    port = metrics.serve(0, health=check)

    before = get(port, "/healthz")[0]
    now[0] = 6.0
    after = get(port, "/healthz")[0]

    assert (before, after) == (200, 503)


def test_instances_keep_separate_registries_and_ignore_unknown_events():
    first, second = ConductorMetrics(), ConductorMetrics()

    first.on_event("claimed", flow="f")
    counted = second.on_event("posted", flow="f")

    assert counted is False
    assert samples(first.exposition().decode())[("conductor_jobs_claimed_total", (("flow", "f"),))]
    assert ("conductor_jobs_claimed_total", (("flow", "f"),)) not in samples(
        second.exposition().decode()
    )


def test_serve_twice_is_refused_and_stop_is_idempotent(metrics):
    port = metrics.serve(0)

    with pytest.raises(RuntimeError, match="already served"):
        metrics.serve(0)
    assert get(port, "/healthz")[0] == 200  # no probe given: healthy
    metrics.stop()
    metrics.stop()
    with pytest.raises(OSError):
        get(port, "/metrics")


def test_running_conductor_serves_metrics_and_health(tmp_path):
    """A real `conductor run --metrics-port` process, scraped over loopback."""
    import json as _json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    import jobboard
    from tests.helpers import wait_until
    from tests.servers import free_port

    url = f"sqlite:///{tmp_path / 'board.db'}"
    port = free_port()
    board = jobboard.connect(url)
    job = board.post("j", "steps", {"spec": {}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor", "run", "--board", url,
         "--flows", "tests.flows_for_tests", "--metrics-port", str(port), "--lease", "1",
         "--log-format", "json"],
        cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE,
        env=dict(os.environ, CONDUCTOR_TEST_LOG=str(tmp_path / "log.jsonl")),
    )
    try:
        wait_until(lambda: board.get(job.id).state.finished, timeout=30)

        def scrape(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()
            except OSError:
                return 0, ""

        status, text = wait_until(
            lambda: (r := scrape("/metrics"))[0] == 200
            and 'conductor_jobs_consumed_total{flow="steps"} 1.0' in r[1] and r, timeout=15)
        assert 'conductor_jobs_claimed_total{flow="steps"} 1.0' in text
        assert 'conductor_task_duration_seconds_count{flow="steps",task="one"} 1.0' in text
        assert "conductor_running_jobs 0.0" in text
        status, body = wait_until(lambda: (r := scrape("/healthz"))[0] == 200 and r, timeout=15)
        assert body.strip() == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        board.close()
    assert proc.returncode == 0
    lines = [_json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    consumed = [line for line in lines if line.get("event") == "job_consumed"]
    assert consumed and consumed[0]["job_id"] == job.id and consumed[0]["flow"] == "steps"
    assert consumed[0]["message"].endswith("job consumed")
