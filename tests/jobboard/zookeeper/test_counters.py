"""Event counters of a ZooKeeper board: exact after a kill -9, and no node per
process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.fixtures import board_url
from tests.jobboard.zookeeper.conftest import node

pytestmark = pytest.mark.zookeeper

WORKER = """
import sys, time, jobboard
board = jobboard.connect(sys.argv[1], namespace=sys.argv[2])
who = jobboard.unique_owner("worker")
n = int(sys.argv[3])
for i in range(n):
    claim = board.claim_next(who)
    if i % 2:
        board.consume(claim, who, claim.token, result=i)
    else:
        board.abandon(claim, who, claim.token)
        again = board.claim(claim.job_id, who)
        board.fail(again, who, again.token, error="no")
print("done", flush=True)
time.sleep(600)
"""


def test_counts_are_exact_after_a_kill_and_leave_no_node_per_process(zookeeper_board_factory, raw):
    # Given jobs posted here, and a worker process that claims and finishes them all
    board = zookeeper_board_factory()
    n = 12
    for i in range(n):
        board.post(f"j{i}", "f")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    url = board_url(zookeeper_board_factory.hosts)
    child = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, board.namespace, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "done"
    finally:
        # When it is killed with -9 right after its last finish
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()

    # Then every event is counted, once, as seen from any board
    counts = zookeeper_board_factory().counters()
    assert counts["posted"] == n
    assert counts["claimed"] == n + n // 2
    assert counts["consumed"] == n // 2
    assert counts["failed"] == n // 2
    assert counts["abandoned"] == n // 2
    assert board.counters() == counts
    # and no node per board instance is left under counters/
    board.close()
    names = raw.get_children(node(board, "counters"))
    assert all(not raw.exists(node(board, "counters", name)).dataLength for name in names)
    assert len(names) <= 16, names
