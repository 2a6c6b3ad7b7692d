"""What only the in-memory board does: named shared stores, reset, an injected clock.

The contract itself is checked by ``test_contract.py`` on every backend,
memory included.
"""

from __future__ import annotations

import uuid

import pytest

import jobboard
from jobboard import ClaimStatus, JobState, unique_owner
from jobboard.memory import MemoryBoard


@pytest.fixture
def name():
    store = f"mem{uuid.uuid4().hex[:8]}"
    yield store
    MemoryBoard.reset(store)


def test_boards_of_one_name_share_a_store_and_other_names_do_not(name):
    first = jobboard.connect(f"memory://{name}")
    second = jobboard.connect(f"memory://{name}?lease=7")
    other = jobboard.connect(f"memory://{name}-other")

    job = first.post("j", "f", {"n": 1})

    assert second.get(job.id) == job and second.lease == 7.0
    assert list(other.iterjobs()) == []
    with pytest.raises(jobboard.JobNotFound):
        other.get(job.id)


def test_reset_forgets_every_job_of_a_store(name):
    board = jobboard.connect(f"memory://{name}")
    board.post("j", "f")

    MemoryBoard.reset(name)

    assert list(jobboard.connect(f"memory://{name}").iterjobs()) == []


def test_an_injected_clock_ends_a_lease_without_waiting(name):
    now = [1000.0]
    board = MemoryBoard(name, clock=lambda: now[0]).connect()
    who = unique_owner("c")
    job = board.post("j", "f")
    claim = board.claim(job, who, lease=5)
    events: list[str] = []
    board.add_listener(lambda event: events.append(event.kind))

    now[0] += 4.9
    assert board.get(job).state is JobState.CLAIMED
    assert board.claim_status(claim) is ClaimStatus.OWNED

    now[0] += 0.2
    assert board.get(job).state is JobState.WAITING
    assert "expired" in events
    assert board.claim_status(claim) is ClaimStatus.LOST
    with pytest.raises(jobboard.NotOwner):
        board.consume(claim, who, claim.token)
    assert board.claim_next(unique_owner("d")).token == claim.token + 1
