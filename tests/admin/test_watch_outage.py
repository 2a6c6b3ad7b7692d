"""``jobboard watch`` through a board outage: a real Redis or ZooKeeper server is stopped
and started again; the view shows a "board unreachable, retrying" banner meanwhile and
recovers by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

import jobboard
from jobboard.admin.cli import EXIT_OK
from tests.admin.helpers import ROOT
from tests.admin.test_watch import PtyReader
from tests.fixtures import board_url

pytestmark = pytest.mark.slow

BANNER = "board unreachable, retrying"


def _server_and_url(backend: str, request) -> tuple[object, str]:
    namespace = f"outage{uuid.uuid4().hex[:8]}"
    if backend == "redis":
        server = request.getfixturevalue("redis_server_factory")(persistent=True)
        return server, f"{server.url}?namespace={namespace}"
    server = request.getfixturevalue("zookeeper_server_factory")()
    return server, f"{board_url(server.hosts, 4.0)}&namespace={namespace}"


@pytest.mark.parametrize("backend", ["redis", "zookeeper"])
def test_watch_shows_a_banner_through_an_outage_and_recovers(backend, request):
    server, url = _server_and_url(backend, request)
    with jobboard.connect(url) as board:
        board.post("before", "images")
    environ = {**os.environ, "CONDUCTOR_BOARD": url, "COLUMNS": "80", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobboard", "watch", "--interval", "0.5s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environ,
        cwd=ROOT,
        start_new_session=True,
    )
    reader = PtyReader(proc.stdout.fileno())
    try:
        # Given a live view of one waiting job
        reader.wait_for(lambda text: "waiting 1 " in text)
        # When the server goes away, the view stays up under the banner
        server.stop()
        reader.wait_for(lambda text: BANNER in text, timeout=30)
        assert proc.poll() is None, reader.text[-2000:]
        reader.wait_for(lambda text: text.count(BANNER) >= 2, timeout=30)  # it keeps retrying
        outage = next(f for f in reader.text.split("Ctrl-C to quit") if BANNER in f)
        assert "waiting 1 " in outage  # the last frame read stays on screen under the banner
        # And once the server is back, it recovers by itself and sees new jobs
        server.start()
        with jobboard.connect(url) as board:
            board.post("after", "images")
        reader.wait_for(
            lambda text: BANNER in text and "waiting 2 " in text.rsplit(BANNER, 1)[1], timeout=60
        )
        frames = reader.text.split("Ctrl-C to quit")
        recovered = next(f for f in reversed(frames) if "waiting 2 " in f)
        assert BANNER not in recovered
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            reader.pump(0.1)
        assert proc.returncode == EXIT_OK, reader.text[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
