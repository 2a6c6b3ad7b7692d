"""Races around a claim on a real ZooKeeper: a delayed renew after a takeover, a
renew crossing a consume, a job deleted out of band while its owner runs it."""

from __future__ import annotations

import json

import pytest

from jobboard import ClaimStatus, JobNotFound, JobState, NotOwner, UnclaimableJob, unique_owner
from tests.helpers import wait_until
from tests.jobboard.zookeeper.conftest import Interleave, node

pytestmark = pytest.mark.zookeeper


def _claimed(board, job, who):
    try:
        return board.claim(job, who)
    except UnclaimableJob:
        return None


def test_a_delayed_renew_after_a_takeover_changes_nothing(
    zookeeper_board_factory, raw, monkeypatch
):
    # Given an owner whose clock stands still (a long pause it does not notice)...
    stale = zookeeper_board_factory(local_clock=lambda: 0.0)
    rival = zookeeper_board_factory()
    job = stale.post("j", "f")
    old = stale.claim(job, unique_owner("stale"), lease=0.5)
    rival_who = unique_owner("rival")
    taken = []

    def take_over() -> None:
        taken.append(wait_until(lambda: _claimed(rival, job, rival_who), timeout=10))

    # ...when its renew reaches the server only after the lease lapsed and a rival
    # deleted and re-created the claim node (its version is 0 again)
    hook = Interleave(stale, monkeypatch)
    hook.arm(take_over, before=True)
    renewed = stale.renew([old])

    # Then the renew fails and reports the claim lost; the rival's claim is intact
    assert hook.fired.is_set() and taken
    assert renewed[job.id] is None
    assert stale.claim_status(old) is ClaimStatus.LOST
    data = json.loads(raw.get(node(stale, "claims", job.id))[0])
    assert (data["owner"], data["token"]) == (rival_who, taken[0].token)
    rival.save_progress(taken[0], rival_who, taken[0].token, "t", {"state": "SUCCESS"})
    assert rival.consume(taken[0], rival_who, taken[0].token).state is JobState.COMPLETE


def test_a_renew_crossing_a_consume_leaves_no_trace(zookeeper_board_factory, monkeypatch):
    # Given a leased claim on a job with a sizeable store
    board = zookeeper_board_factory()
    job = board.post("j", "f", {"blob": "x" * 10_000})
    who = unique_owner("a")
    claim = board.claim(job, who, lease=30)
    finished = []

    # When the job is consumed after the renew's request went out, before its answer
    hook = Interleave(board, monkeypatch)
    hook.arm(lambda: finished.append(board.consume(claim, who, claim.token, result=1)))
    renewed = board.renew([claim])

    # Then the finished job is not reported renewed and nothing of it is kept
    assert hook.fired.is_set() and finished[0].state is JobState.COMPLETE
    assert renewed[job.id] is None
    assert job.id not in board._fences
    assert board.held_claim(job) is None
    assert board.get(job).state is JobState.COMPLETE


def test_a_job_deleted_out_of_band_leaves_no_nodes_and_refuses_progress(
    zookeeper_board_factory, raw
):
    # Given an owner running a job with progress saved
    board = zookeeper_board_factory()
    job = board.post("j", "f")
    other = board.post("k", "f")
    who = unique_owner("a")
    claim = board.claim(job, who)
    board.save_progress(claim, who, claim.token, "t1", {"state": "SUCCESS"})

    # When someone deletes the job's node behind the board's back
    raw.delete(node(board, "jobs", job.id))

    # Then the next progress write fails and takes the job's other nodes with it
    with pytest.raises((NotOwner, JobNotFound)):
        board.save_progress(claim, who, claim.token, "t2", {"state": "SUCCESS"})
    for folder in ("claims", "state", "progress"):
        assert raw.exists(node(board, folder, job.id)) is None, folder
    assert board.claim_status(claim) is ClaimStatus.LOST
    with pytest.raises(JobNotFound):
        board.get(job)
    # and the rest of the board carries on
    second = board.claim_next(who)
    assert second is not None and second.job_id == other.id
