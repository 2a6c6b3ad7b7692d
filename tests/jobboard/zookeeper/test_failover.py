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
