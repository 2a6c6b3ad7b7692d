"""``consume_and_claim_next`` on Redis: one script that finishes a job, then claims
the next (issue 15 item 6). Counts, never durations: commands per job are printed
by ``python -m bench --sections throughput``."""

from __future__ import annotations

import pytest

from jobboard import JobState, StaleToken, unique_owner
from tests.jobboard.redis.helpers import counting_round_trips
from tests.jobboard.redis.test_redis_corrupt_records import _damage
from tests.jobboard.redis.test_redis_idle import _blocking_pops

pytestmark = pytest.mark.redis


def test_consume_and_claim_next_is_one_round_trip(redis_board_factory, monkeypatch):
    board = redis_board_factory()
    who = unique_owner("w")
    first, second = board.post("a", "f"), board.post("b", "f")
    claim = board.claim_next(who, ["f"])
    assert claim is not None and claim.job_id == first.id
    with counting_round_trips(board, monkeypatch) as trips:
        out = board.consume_and_claim_next(
            first, who, claim.token, result=1, progress={"t": {"state": "SUCCESS"}}, flows=["f"]
        )
    assert trips.count == 1
    assert out.job.state is JobState.COMPLETE and out.claim is not None
    assert out.claim.job_id == second.id and out.claim.token == board.get(second).token
    assert board.load_progress(first) == {"t": {"state": "SUCCESS"}}


def test_an_empty_claim_step_lets_wait_only_block(redis_board_factory, monkeypatch):
    # Given a consume whose claim step found nothing waiting
    board = redis_board_factory(lease=30)
    who = unique_owner("w")
    job = board.post("a", "f")
    claim = board.claim(job, who)
    out = board.consume_and_claim_next(job, who, claim.token, flows=["f"])
    assert out.claim is None and out.claim_error is None
    # Then waiting asks nothing more of the server than a blocking pop, as after claim_next
    pops = _blocking_pops(board, monkeypatch)
    with counting_round_trips(board, monkeypatch) as trips:
        assert board.wait(timeout=0.05, flows=["f"]) is False
        assert trips.count == pops[0] == 1
        redis_board_factory().post("j", "f")
        assert board.wait(timeout=10, flows=["f"]) is True


def test_a_stale_token_is_refused_and_nothing_is_claimed(redis_board_factory):
    board = redis_board_factory()
    who = unique_owner("w")
    job, waiting = board.post("a", "f"), board.post("b", "f")
    old = board.claim(job, who)
    board.abandon(job, who, old.token)
    new = board.claim(job, who)
    with pytest.raises(StaleToken):
        board.consume_and_claim_next(job, who, old.token, flows=["f"])
    assert board.get(job).state is JobState.CLAIMED and board.get(job).token == new.token
    assert board.get(waiting).state is JobState.WAITING


def test_corrupt_records_met_by_the_claim_step_are_trashed(redis_board_factory, raw):
    board = redis_board_factory()
    who = unique_owner("w")
    job = board.post("first", "f")
    claim = board.claim(job, who)
    bad = _damage(raw, board)
    good = board.post("good", "f")
    out = board.consume_and_claim_next(job, who, claim.token)
    assert out.job.state is JobState.COMPLETE
    assert out.claim is not None and out.claim.job_id == good.id
    trashed = {j.id for j in board.iterjobs(states=["trashed"])}
    assert trashed == set(bad.values())
