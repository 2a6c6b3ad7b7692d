"""Producers in separate processes racing to post one dedupe key get one job, on every
backend that processes share (Redis, ZooKeeper, SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import jobboard
from tests.fixtures import _drop_namespace, board_url, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS = 4
KEYS = 3

#: A producer: connect, say ready, post every key once "go" arrives, print the ids.
SCRIPT = """
import json, sys
import jobboard
board = jobboard.connect(sys.argv[1], namespace=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
ids = [board.post("p", "f", {"by": sys.argv[3]}, key=f"k{n}").id for n in range(int(sys.argv[4]))]
print(json.dumps(ids), flush=True)
board.close()
"""


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["redis", "zookeeper", "sqlite"])
def shared_url(request, tmp_path, namespace):
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
    elif request.param == "zookeeper":
        hosts = request.getfixturevalue("zookeeper_hosts")
        yield board_url(hosts)
        _drop_namespace(hosts, namespace)
    else:
        yield sqlite_url(tmp_path / "board.db")


def test_producer_processes_racing_one_key_get_one_job(shared_url, namespace):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, shared_url, namespace, str(n), str(KEYS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PRODUCERS)
    ]
    try:
        for proc in procs:  # every producer connected before any posts
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(ids == results[0] for ids in results), results
    board = jobboard.connect(shared_url, namespace=namespace)
    try:
        listed = list(board.iterjobs(ensure_fresh=True))
        assert sorted(j.id for j in listed) == sorted(results[0])
        assert {j.key for j in listed} == {f"k{n}" for n in range(KEYS)}
        assert board.counters().get("posted") == KEYS
    finally:
        board.close()
