"""A board reads its own writes: a job it released itself is claimable at once,
whatever order its watches and its own writes' answers arrive in."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobboard import JobState, unique_owner
from jobboard.zookeeper import ZookeeperBoard
from tests.helpers import wait_until

pytestmark = pytest.mark.zookeeper


def watch_before_own_release(
    board: ZookeeperBoard, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Callable[[str], None]]:
    """Make the claims watch's listing land before the board applies its own
    release (the server sends the watch event before the write's answer), and
    hold back the read that confirms a released job is waiting again (a slow
    event thread). Returns the held-back job ids and the real confirmation."""
    held_back: list[str] = []
    confirm = board._confirm_waiting
    monkeypatch.setattr(board, "_confirm_waiting", held_back.append)
    local = board._local

    def local_after_the_watch(kind: str, job_id: str, present: bool) -> None:
        if kind == "claims" and not present:
            wait_until(lambda: job_id in held_back, message="the claims listing")
        local(kind, job_id, present)

    monkeypatch.setattr(board, "_local", local_after_the_watch)
    return held_back, confirm


def test_claim_next_takes_a_job_just_abandoned_when_the_watch_came_first(
    zookeeper_board_factory, monkeypatch
):
    # Given a board holding a claim, whose claims watch answers before its own
    # abandon is applied, the confirming read held back
    board = zookeeper_board_factory()
    job = board.post("j", "f", max_attempts=5)
    claim = board.claim_next(unique_owner("first"))
    assert claim is not None and claim.job_id == job.id
    held_back, confirm = watch_before_own_release(board, monkeypatch)

    # When it abandons the job and at once asks for the next one
    board.abandon(job, claim.owner, claim.token, reason="crashed")
    again = board.claim_next(unique_owner("second"))

    # Then it gets that job back (read-your-writes), before any confirmation
    assert held_back == [job.id]
    assert again is not None and again.job_id == job.id and again.token == claim.token + 1
    assert board.get(job).state is JobState.CLAIMED

    # ...and the late confirmation does not offer the claimed job a second time
    for job_id in held_back:
        confirm(job_id)
    assert board.claim_next(unique_owner("third")) is None
