"""ZooKeeper ensemble: the leader killed while real conductors work.

Three ZooKeeper servers form one quorum on loopback. The board URL lists all
three; when the leader dies the others elect a new one and each conductor's
session moves to a live server before it times out, so its claims (ephemeral
nodes) survive: every job completes and no task runs twice.
"""

from __future__ import annotations

import time
import uuid

import pytest

import jobboard
from jobboard import JobState
from tests.ha.fleet import (
    Fleet,
    executions,
    post_batch,
    running,
    some_done,
    states,
    wait_all_finished,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

JOBS = 30
#: Longer than an election of the ensemble (a few ticks of 250 ms), so sessions survive it.
SESSION_TIMEOUT = 8


def test_leader_killed_mid_run_every_job_completes_once(zookeeper_ensemble, tmp_path):
    # Given a board on all three servers and two conductors working through a batch
    namespace = f"z{uuid.uuid4().hex[:8]}"
    url = (
        f"zookeeper://{zookeeper_ensemble.hosts}/conductor-ha"
        f"?namespace={namespace}&session_timeout={SESSION_TIMEOUT}"
    )
    board = jobboard.connect(url)
    ids = post_batch(board, JOBS, pause=0.1)
    fleet = Fleet(url, tmp_path)
    with running(fleet):
        for name in ("z1", "z2"):
            fleet.start(name, "--max-jobs", "2")
        wait_until(lambda: some_done(board, ids, 4), 60, 0.05, "first jobs done")

        # When the leader is killed mid-run
        leader = zookeeper_ensemble.leader()
        assert leader is not None
        left = JOBS - states(board, ids)[JobState.COMPLETE]
        killed_at = time.monotonic()
        leader.kill()
        new_leader = wait_until(zookeeper_ensemble.leader, 30, 0.05, "a new leader")
        elected = time.monotonic() - killed_at
        took = wait_all_finished(board, ids, 90)

        # Then another server leads, every job completed and no task ran twice
        assert new_leader is not leader and left > 0
        assert states(board, ids) == {JobState.COMPLETE: JOBS}
        done = executions(fleet)
        assert len(done) == JOBS * 3 and set(done.values()) == {1}, done.most_common(3)
        assert sum(executions(fleet, "start").values()) == JOBS * 3
        assert all(proc.poll() is None for proc in fleet.procs.values())
        print(
            f"\nzookeeper ensemble: new leader (server {new_leader.myid}) {elected:.1f}s after "
            f"kill -9 of leader {leader.myid} with {left} of {JOBS} jobs unfinished; all jobs "
            f"complete {time.monotonic() - killed_at:.1f}s after it ({took:.1f}s of waiting); "
            "no task ran twice"
        )
    board.close()
