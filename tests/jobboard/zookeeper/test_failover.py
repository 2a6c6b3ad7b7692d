"""Taking over from a silent owner: an idle board's ``wait`` wakes when another
owner's lease runs out (no polling tick), and the job is then claimable."""

from __future__ import annotations

import time

import pytest

from jobboard import unique_owner
from tests.helpers import wait_until

pytestmark = pytest.mark.zookeeper


def test_an_idle_waiter_wakes_when_a_silent_owners_lease_runs_out(zookeeper_board_factory):
    # Given a job claimed with a short lease by an owner that never renews it
    owner = zookeeper_board_factory()
    waiter = zookeeper_board_factory()
    job = owner.post("j", "f")
    claim = owner.claim(job, unique_owner("silent"), lease=1.0)
    # (once the waiter's view has the job, this attempt leaves it known as claimed,
    # so a claims listing still on its way cannot make ``wait`` wake early)
    wait_until(lambda: waiter.job_count == 1, message="the waiter's view of the job")
    assert waiter.claim_next(unique_owner("early")) is None

    # When an idle board waits for work (nothing is posted or released meanwhile)
    woke = waiter.wait(timeout=5)
    woke_at = time.time()

    # Then it wakes once the lease has run out, and the job is its to take
    assert woke
    taken = waiter.claim_next(unique_owner("next"))
    assert taken is not None and taken.job_id == job.id and taken.token == claim.token + 1
    assert woke_at >= claim.expires_at - 0.05  # not before the lease ended (clock rounding)


def test_a_silent_head_of_the_waiters_does_not_hold_back_its_lapsed_lease(
    zookeeper_board_factory,
):
    # Given an owner first in line of the idle boards, and a waiter queued behind it
    owner = zookeeper_board_factory()
    waiter = zookeeper_board_factory()
    producer = zookeeper_board_factory()
    assert owner.wait(timeout=0.05) is False  # first in line
    assert waiter.wait(timeout=0.05) is False  # queued behind the owner
    assert waiter._places and not next(iter(waiter._places.values())).head
    # When the owner takes a job with a short lease, then falls silent while its
    # session lives on (a hung process whose client still pings)
    job = producer.post("j", "f")
    wait_until(lambda: owner.job_count == 1, message="the owner's view of the job")
    claim = owner.claim_next(unique_owner("silent"), lease=1.0)
    assert claim is not None and claim.job_id == job.id
    # Then the waiter wakes once the lease has run out, and the job is its to take
    deadline = time.monotonic() + 5
    taken = None
    while taken is None and time.monotonic() < deadline:
        if waiter.wait(timeout=deadline - time.monotonic()):
            taken = waiter.claim_next(unique_owner("next"), lease=1.0)
    assert taken is not None and taken.job_id == job.id and taken.token == claim.token + 1
    assert time.time() >= claim.expires_at - 0.05
    # And the owner, still holding a leased claim, stays out of the queue
    assert not owner._places
