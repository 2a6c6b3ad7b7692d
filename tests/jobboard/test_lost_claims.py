"""A claim known lost leaves the local claim view (issue 9, item 5).

The owner keeps only what answers ``claim_status`` (``LOST``), never the job
and its store; its own abandon or finish, refused by the board, forgets the
claim; the SQLite watcher then has nothing to watch and goes idle.
"""

from __future__ import annotations

import pytest

from jobboard import ClaimStatus, InvalidState, NotOwner, StaleToken
from tests.helpers import wait_until

#: A store big enough that keeping it per lost claim is a real leak.
BIG_STORE = {"blob": "x" * 200_000}


@pytest.fixture(params=["sqlite", "redis", "zookeeper"])
def factory(request: pytest.FixtureRequest):
    return request.getfixturevalue(f"{request.param}_board_factory")


def _lose_claim(factory, how: str):
    """Board ``owner`` claims a big job; an operator board takes it away with ``how``."""
    owner, operator = factory(), factory()
    job = owner.post("big", "flow-a", BIG_STORE)
    claim = owner.claim(job, "owner-1")
    assert owner.held_claim(job).job is not None
    if how == "abandon":
        operator.abandon(job, "operator", force=True, reason="taken away")
    else:
        operator.trash(job, "operator", force=True, reason="taken away")
    wait_until(
        lambda: owner.claim_status(claim) is ClaimStatus.LOST,
        message="the owner learns of the loss",
    )
    return owner, claim


@pytest.mark.parametrize("how", ["abandon", "trash"])
def test_a_lost_claim_keeps_no_store_and_a_refused_release_forgets_it(factory, how):
    owner, claim = _lose_claim(factory, how)
    slim = owner.held_claim(claim.job_id)
    # Before the release is refused, only the claim's identity remains, no job or store.
    assert slim is not None and slim.job is None and slim.token == claim.token
    # A taken-away claim is refused as not ours; a trashed job as already ended.
    with pytest.raises((NotOwner, InvalidState)):
        owner.abandon(claim.job_id, claim.owner, claim.token, reason="lost")
    assert owner.held_claim(claim.job_id) is None
    assert owner.claim_status(claim) is ClaimStatus.LOST
    assert owner.claim_status(claim.job_id) is ClaimStatus.LOST


def test_a_refused_consume_forgets_the_claim(factory):
    owner, claim = _lose_claim(factory, "abandon")
    with pytest.raises(NotOwner):
        owner.consume(claim.job_id, claim.owner, claim.token)
    assert owner.held_claim(claim.job_id) is None
    assert owner.claim_status(claim) is ClaimStatus.LOST


def test_a_stale_write_does_not_forget_a_newer_claim(factory):
    """A refusal names an old token: the claim held now (a newer token) stays."""
    board = factory()
    job = board.post("j", "flow-a")
    first = board.claim(job, "me")
    board.abandon(first, "me", first.token)
    second = board.claim(job, "me")
    with pytest.raises(StaleToken):
        board.consume(job, "me", first.token)
    assert board.held_claim(job) is not None
    assert board.claim_status(second) is ClaimStatus.OWNED


def test_sqlite_watcher_goes_idle_after_the_loss_is_handled(sqlite_board_factory):
    owner, claim = _lose_claim(sqlite_board_factory, "abandon")
    # Known lost: nothing left to watch for, even before the owner's abandon.
    wait_until(lambda: not owner._watch_wanted(), message="the watcher has nothing to watch")
    with pytest.raises(NotOwner):
        owner.abandon(claim.job_id, claim.owner, claim.token)
    assert not owner._held and not owner._lost
