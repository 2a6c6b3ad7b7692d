"""Readiness (``/healthz``) and liveness (``/livez``): a board outage fails the first only.

A Kubernetes liveness probe on an endpoint that asks the board would restart
every conductor during a short board outage; ``/livez`` answers from the
process alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from conductor.metrics import LIVE_PATH, READY_PATH, ConductorMetrics, loop_alive
from tests.helpers import wait_until
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def test_readiness_and_liveness_are_separate_probes():
    metrics = ConductorMetrics()
    port = metrics.serve(0, health=lambda: (False, "board connection down"))
    try:
        assert get(port, READY_PATH) == (503, "board connection down\n")
        assert get(port, LIVE_PATH) == (200, "ok\n")  # no liveness probe given: alive
        status, body = get(port, "/nope")
        assert status == 404 and "/livez" in body
    finally:
        metrics.stop()


def test_liveness_fails_only_when_the_heartbeat_loop_died():
    done = threading.Event()
    beating = threading.Thread(target=done.wait)
    beating.start()
    stopped = threading.Event()
    conductor = SimpleNamespace(_heartbeat=None, wait=stopped.wait)
    probe = loop_alive(conductor)
    assert probe() == (True, "ok")  # not started yet
    conductor._heartbeat = beating
    assert probe() == (True, "ok")
    done.set()
    beating.join()
    assert probe() == (False, "the heartbeat loop has died")
    stopped.set()  # run() returned: the process is leaving, not stuck
    assert probe() == (True, "stopped")


@pytest.mark.slow
@pytest.mark.zookeeper
def test_a_zookeeper_outage_fails_readiness_but_never_liveness(zookeeper_server_factory, tmp_path):
    server = zookeeper_server_factory()
    url = f"zookeeper://{server.hosts}/probes?namespace=p{uuid.uuid4().hex[:8]}&session_timeout=20"
    port = free_port()
    # Given: a conductor with its metrics port set from the environment, as in a container.
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        CONDUCTOR_BOARD=url,
        CONDUCTOR_FLOWS="tests.flows_for_tests",
        CONDUCTOR_METRICS_PORT=str(port),
        CONDUCTOR_TEST_LOG=str(tmp_path / "log.jsonl"),
    )
    log = open(tmp_path / "conductor.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        wait_until(lambda: get(port, READY_PATH)[0] == 200, timeout=60, message="ready")
        assert get(port, LIVE_PATH)[0] == 200
        # When: the board goes away.
        server.stop()
        wait_until(lambda: get(port, READY_PATH)[0] == 503, timeout=30, message="unready")
        # Then: not ready, but alive, for as long as the outage lasts.
        for _ in range(5):
            assert get(port, READY_PATH)[0] == 503
            assert get(port, LIVE_PATH) == (200, "ok\n")
        # And when the board is back, ready again.
        server.start()
        wait_until(lambda: get(port, READY_PATH)[0] == 200, timeout=60, message="ready again")
        assert get(port, LIVE_PATH)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    assert proc.returncode == 0, (tmp_path / "conductor.log").read_text()[-3000:]
