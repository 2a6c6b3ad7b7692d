"""One corrupted job record never breaks the namespace (issue 9 item 9, Redis part).

Records are damaged directly with redis-py: a store that is not JSON, an
unknown priority, an unknown state, a missing field, text that is not UTF-8.
"""

from __future__ import annotations

import pytest

from jobboard import InvalidJob, JobState, unique_owner
from tests.jobboard.redis.helpers import prefix

DAMAGE = {
    "store": {"store": "{not json"},
    "priority": {"priority": "URGENT"},
    "state": {"state": "bogus"},
    "name": None,  # the field is deleted
    "flow": {"flow": b"\xff\xfe"},
}


def _damage(raw, board) -> dict[str, str]:
    """Post one job per kind of damage and one good job; returns field -> job id."""
    ids = {}
    for field, change in DAMAGE.items():
        job = board.post(f"bad-{field}", "f", {"secret": "s3cr3t"})
        key = f"{prefix(board)}job:{job.id}"
        if change is None:
            raw.hdel(key, field)
        else:
            raw.hset(key, mapping=change)
        ids[field] = job.id
    return ids


def test_listings_stats_get_trash_and_purge_survive_corrupt_records(redis_board_factory, raw):
    board = redis_board_factory()
    bad = _damage(raw, board)
    good = board.post("good", "f", {"x": 1})

    listed = {job.id: job for job in board.iterjobs()}  # never raises for the namespace
    assert set(listed) == {*bad.values(), good.id}
    assert listed[good.id].store == {"x": 1} and "unreadable" not in listed[good.id].details
    for field, job_id in bad.items():
        job = listed[job_id]
        assert f"'{field}'" in job.details["unreadable"] or "UTF-8" in job.details["unreadable"]
        assert job.last_error.startswith("unreadable record")
        assert job.store == {} and "s3cr3t" not in repr(job)
    assert listed[bad["state"]].state is JobState.WAITING  # from the index it sits in

    stats = board.stats()
    assert stats["states"]["waiting"] == len(bad) + 1
    assert board.get(good).store == {"x": 1}
    with pytest.raises(InvalidJob) as info:
        board.get(bad["store"])
    assert (info.value.job, info.value.field) == (bad["store"], "store")

    # An operator trashes every one by id, without an error, then purges them.
    for job_id in bad.values():
        trashed = board.trash(job_id, "operator", force=True, reason="corrupt")
        assert trashed.id == job_id and trashed.state is JobState.TRASHED
    assert [j.id for j in board.iterjobs()] == [good.id]
    assert {j.id for j in board.iterjobs(states=["trashed"])} == set(bad.values())
    assert board.purge(states=["trashed"]) == len(bad)
    assert not any(raw.exists(f"{prefix(board)}job:{job_id}") for job_id in bad.values())
    assert [j.id for j in board.iterjobs(states=list(JobState))] == [good.id]


def test_claim_next_trashes_every_corrupt_record_with_its_reason(redis_board_factory, raw):
    board = redis_board_factory()
    bad = _damage(raw, board)
    good = board.post("good", "f")
    who = unique_owner("c")

    claim = board.claim_next(who)
    assert claim is not None and claim.job_id == good.id
    assert board.claim_next(who) is None
    finished = {job.id: job for job in board.iterjobs(states=["trashed"])}
    assert set(finished) == set(bad.values())
    for field, job_id in bad.items():
        reason = finished[job_id].last_error or ""
        assert field in reason or "UTF-8" in reason, (field, reason)
        assert "s3cr3t" not in reason
