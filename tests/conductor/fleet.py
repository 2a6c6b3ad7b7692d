"""Real ``conductor run`` processes writing what their tasks did to one execution log.

Tests start conductors on a SQLite file, a real redis-server or a real
ZooKeeper (fixtures of ``tests/fixtures.py``) and read the log the flows of
``tests/flows_for_tests.py`` append to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0


def board_url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A board URL of ``backend`` on a fresh namespace (1 s leases, 2 s ZooKeeper sessions)."""
    namespace = f"p{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'board.db'}?namespace={namespace}&lease={LEASE}"
    if backend == "redis":
        base = request.getfixturevalue("redis_url")
        return f"{base}?namespace={namespace}&lease={LEASE}"
    base = request.getfixturevalue("zookeeper_url")
    return f"{base}?namespace={namespace}&session_timeout=2"


class Fleet:
    """Conductor subprocesses writing task executions to one log."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.log = workdir / "executions.jsonl"
        self.log.touch()
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        env = dict(os.environ, CONDUCTOR_TEST_LOG=str(self.log), PYTHONUNBUFFERED="1")
        out = open(self.workdir / f"{name}.log", "ab")
        # ZooKeeper claims live as long as the session; the others are leases.
        lease = [] if self.url.startswith("zookeeper") else ["--lease", str(LEASE)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "conductor", "run", "--board", self.url,
             "--flows", "tests.flows_for_tests", "--name", name, *lease,
             "--log-level", "INFO", "--drain-timeout", "10", *extra],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def records(self, event: str | None = None, job: str | None = None) -> list[dict]:
        rows = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [r for r in rows if (event is None or r["event"] == event)
                and (job is None or r["job"] == job)]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
