"""Redis board: what the producers' keys leave behind, and how long it stays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from jobboard import JobState, unique_owner


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_keys_and_children_indexes_expire_with_their_finished_jobs(redis_board_factory, raw):
    board = redis_board_factory(retention=30)
    prefix = f"jb:{{{board.namespace}}}:"
    parent = board.post("parent", "f")
    kids = [board.post(f"kid{i}", "f", key=f"k{i}", parent=parent) for i in range(2)]
    assert raw.get(prefix + "key:k0").decode() == kids[0].id
    assert raw.pttl(prefix + "key:k0") == -1  # kept while the job is unfinished
    assert raw.zcard(prefix + f"children:{parent.id}") == 2

    first = board.claim(kids[0], unique_owner("w"))
    board.consume(kids[0], first.owner, first.token)
    assert 0 < raw.pttl(prefix + "key:k0") <= 30_000  # expires with the finished job
    assert raw.pttl(prefix + f"children:{parent.id}") == -1  # one child is unfinished

    second = board.claim(kids[1], unique_owner("w"))
    board.consume(kids[1], second.owner, second.token)
    assert 0 < raw.pttl(prefix + f"children:{parent.id}") <= 30_000
    assert [j.id for j in board.children(parent)] == [k.id for k in kids]

    assert board.purge() == 2
    assert raw.exists(prefix + "key:k0", prefix + "key:k1") == 0
    assert raw.zcard(prefix + f"children:{parent.id}") == 0


def test_a_scheduled_job_sits_in_the_scheduled_set_until_claim_next_promotes_it(
    redis_board_factory, raw
):
    board = redis_board_factory()
    prefix = f"jb:{{{board.namespace}}}:"
    job = board.post("later", "f", not_before=1.0)  # long due: waiting at once
    assert job.state is JobState.WAITING and raw.zcard(prefix + "scheduled") == 0
    later = board.post("later", "f", delay=3600)
    assert raw.zscore(prefix + "scheduled", later.id) == pytest.approx(later.not_before, abs=1e-3)
    board.cancel(later)
    assert raw.zcard(prefix + "scheduled") == 0
