"""Redis Sentinel: real conductors follow the new master after the old one is killed.

A master, one replica and three sentinels run on loopback, with passwords on
the data servers and on the sentinels. ``conductor run`` processes and the
``jobboard`` command reach the board by ``redis+sentinel://`` URL only.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

import jobboard
from jobboard import JobState
from tests.ha.fleet import (
    Fleet,
    executions,
    jobboard_cli,
    post_batch,
    running,
    some_done,
    states,
    wait_all_finished,
)
from tests.ha.servers import SentinelGroup, wait_replicated
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

JOBS = 40
#: Claims outlive a failover of a few seconds, so most running jobs keep their owner.
LEASE = 6


def _secrets_absent(text: str) -> bool:
    return SentinelGroup.MASTER_PASSWORD not in text and SentinelGroup.SENTINEL_PASSWORD not in text


def test_conductors_follow_the_new_master_when_the_old_one_is_killed(sentinel_group, tmp_path):
    # Given a board reached through the sentinels, a batch of jobs safely on the
    # replica too, and two conductor processes working through it
    url = sentinel_group.url(f"s{uuid.uuid4().hex[:8]}", lease=LEASE)
    board = jobboard.connect(url)
    ids = post_batch(board, JOBS)
    old = sentinel_group.master
    wait_replicated(old, [sentinel_group.replica])  # the posts reached the replica
    fleet = Fleet(url, tmp_path)
    for name in ("c1", "c2"):
        fleet.start(name, "--max-jobs", "2", "--lease", str(LEASE))
    with running(fleet):
        wait_until(lambda: some_done(board, ids, 5), 60, 0.05, "first jobs done")

        # When the master is killed mid-run
        killed_at = time.monotonic()
        old.kill()
        new_port = wait_until(
            lambda: (p := sentinel_group.master_port()) != old.port and p,
            30,
            0.05,
            "a replica promoted",
        )
        promoted = time.monotonic() - killed_at
        took = wait_all_finished(board, ids, 90)

        # Then the replica is the master, every job completed, the conductors still run
        assert new_port == sentinel_group.replica.port
        counts = states(board, ids)
        assert counts == {JobState.COMPLETE: JOBS}, counts
        assert all(proc.poll() is None for proc in fleet.procs.values())
        assert f"127.0.0.1:{new_port}" in repr(board)
        reruns = sum(n - 1 for n in executions(fleet).values())
        print(
            f"\nsentinel failover: replica promoted {promoted:.1f}s after kill -9 of the "
            f"master; all {JOBS} jobs complete {time.monotonic() - killed_at:.1f}s after it "
            f"({took:.1f}s of waiting); tasks run again after the failover: {reruns}"
        )
        # And the admin command reads the board through the sentinels too
        listed = jobboard_cli(url, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        rows = rows["jobs"] if isinstance(rows, dict) else rows
        assert {row["id"] for row in rows if row["state"] == "complete"} >= set(ids)
        assert _secrets_absent(listed.stdout + listed.stderr)
        assert all(_secrets_absent(fleet.output(name)) for name in fleet.procs)
    board.close()


def test_bad_credentials_are_reported_naming_the_server_never_the_password(sentinel_group):
    good = sentinel_group.url("creds")
    wrong_master = good.replace(SentinelGroup.MASTER_PASSWORD, "not-the-master-password")
    result = jobboard_cli(wrong_master, "list")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "authentication failed" in text
    assert f"127.0.0.1:{sentinel_group.master.port}" in text and "?:?" not in text
    assert "not-the-master-password" not in text and _secrets_absent(text)

    wrong_sentinel = good.replace(SentinelGroup.SENTINEL_PASSWORD, "not-the-sentinel-password")
    result = jobboard_cli(wrong_sentinel, "list")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Sentinel service 'conductor-ha'" in text
    assert f"127.0.0.1:{sentinel_group.sentinels[0].port}" in text
    assert "not-the-sentinel-password" not in text and _secrets_absent(text)
