"""A job that completes keeps no error of an earlier attempt (issue 9, item 15)."""

from __future__ import annotations

from jobboard import JobState
from tests.helpers import wait_until


def test_consume_clears_an_earlier_attempts_error(board):
    job = board.post("j", "flow-a")
    first = board.claim(job, "me")
    board.abandon(first, "me", first.token, reason="worker crashed")
    assert board.get(job).last_error == "worker crashed"
    second = board.claim(job, "me")
    done = board.consume(second, "me", second.token, result={"ok": True})
    assert done.state is JobState.COMPLETE and done.last_error is None
    assert board.get(job).last_error is None


def test_failure_after_an_earlier_error_keeps_the_new_one(board):
    job = board.post("j", "flow-a")
    first = board.claim(job, "me")
    board.abandon(first, "me", first.token, reason="worker crashed")
    second = board.claim(job, "me")
    board.fail(second, "me", second.token, error="bad input")
    assert board.get(job).last_error == "bad input"


def test_sqlite_consume_after_an_expired_lease_clears_it(sqlite_board_factory):
    board = sqlite_board_factory()
    job = board.post("j", "flow-a")
    board.claim(job, "gone", lease=0.05)
    claim = wait_until(lambda: board.claim_next("me"), message="the lease runs out")
    assert "expired" in (board.get(job).last_error or "")
    assert board.consume(claim, "me", claim.token).last_error is None
    assert board.get(job).last_error is None
