"""Operator parts of the contract on every backend: flow pauses and force_cancel."""

from __future__ import annotations

import pytest

from jobboard import InvalidJob


def test_pause_is_shared_persistent_and_undone_by_resume(board_factory):
    board = board_factory()
    assert board.paused_flows() == {}
    # Given a paused flow
    board.pause_flow("images", reason="incident 42", by="operator@test")
    board.pause_flow("images", reason="incident 43", by="operator@test")  # idempotent
    board.pause_flow("billing.v2:eu", reason=None)
    # Then another connection to the same board sees it, with its note
    other = board_factory()
    paused = other.paused_flows()
    assert set(paused) == {"images", "billing.v2:eu"}
    assert paused["images"]["reason"] == "incident 43"
    assert paused["images"]["by"] == "operator@test"
    assert paused["images"]["since"] > 0
    # When it is resumed, only the other pause stays
    assert other.resume_flow("images") is True
    assert other.resume_flow("images") is False
    assert set(board.paused_flows()) == {"billing.v2:eu"}
    # And waiting jobs of a paused flow are untouched by a pause
    job = board.post("j", "billing.v2:eu")
    assert board.get(job.id).state.value == "waiting"


def test_pause_refuses_a_bad_flow_name(board):
    with pytest.raises(InvalidJob, match="flow"):
        board.pause_flow("")
    with pytest.raises(InvalidJob, match="flow"):
        board.resume_flow("x" * 300)
    assert board.paused_flows() == {}



def test_force_cancel_ends_a_claimed_job_and_fences_its_owner(board):
    from jobboard import InvalidState, JobState, NotOwner, unique_owner

    owner = unique_owner("c")
    waiting = board.post("w", "images")
    claimed = board.post("c", "images")
    claim = board.claim(claimed, owner, lease=60)
    # When an operator force-cancels both
    ended = board.force_cancel(claimed, "operator@test", reason="stuck task")
    board.force_cancel(waiting, "operator@test")
    # Then both are cancelled with the reason, and the old owner's writes fail
    assert ended.state is JobState.CANCELLED and ended.last_error == "stuck task"
    assert board.get(claimed.id).state is JobState.CANCELLED
    assert board.get(waiting.id).state is JobState.CANCELLED
    with pytest.raises((NotOwner, InvalidState)):
        board.consume(claimed, owner, claim.token)
    with pytest.raises((NotOwner, InvalidState)):
        board.save_progress(claimed, owner, claim.token, "t", {"state": "RUNNING"})
