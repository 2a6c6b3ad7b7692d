"""A job whose lease ran out is waiting like any other: found by the property tests.

The state machine of ``test_board_model`` found that on ZooKeeper a job whose
leased claim lapsed (its owner still connected) is claimed by ``claim_next``
only once no other job waits: a HIGH job then waits behind every LOW job of
the backlog. This test pins the contract on every backend: after a lease runs
out, the job keeps its place (priority, then post order).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobboard import JobPriority
from tests.properties.backends import LONG_LEASE, Env, MemoryEnv, SqliteEnv, eventually

BACKLOG = 3


@pytest.fixture(params=["memory", "sqlite", "redis", "zookeeper"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if request.param == "memory":
        yield MemoryEnv()
    elif request.param == "sqlite":
        yield SqliteEnv(tmp_path)
    else:
        yield request.getfixturevalue(f"{request.param}_env")


def test_a_job_whose_lease_ran_out_keeps_its_priority(env: Env) -> None:
    namespace = f"l{uuid.uuid4().hex[:10]}"
    owner, other = env.open(namespace), env.open(namespace)
    try:
        # Given: a HIGH job whose owner let its lease run out (the owner lives on).
        high = owner.post("high", "f", priority=JobPriority.HIGH)
        env.expire(owner, owner.claim(high.id, "w0", lease=LONG_LEASE))
        # And: a backlog of LOW jobs posted after it.
        for i in range(BACKLOG):
            other.post(f"low-{i}", "f", priority=JobPriority.LOW)
        eventually(
            lambda: len(list(other.iterjobs(only_unclaimed=True))) == BACKLOG + 1,
            what="every job listed as waiting",
        )
        # When: another owner takes the best waiting job.
        taken = other.claim_next("w1", lease=LONG_LEASE)
        # Then: it is the HIGH job, not one of the LOW jobs behind it.
        assert taken is not None
        assert (taken.job_id, taken.token) == (high.id, 2)
    finally:
        owner.close()
        other.close()
