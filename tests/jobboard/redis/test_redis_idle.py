"""An idle Redis board sends nothing while nothing happens, and wakes when the
first lease runs out (issue 15 items 2 and 5). Counts, never durations: the
speed figures are printed by bench/redis_failover_idle.py."""

from __future__ import annotations

import threading
import time

import pytest

from conductor.conductor import Conductor
from jobboard import JobState, unique_owner
from jobboard.redis.idle import IdleKnowledge
from tests.flows_for_tests import FLOWS
from tests.helpers import wait_until
from tests.jobboard.redis.helpers import count_calls, counting_round_trips

pytestmark = pytest.mark.redis


def _blocking_pops(board, monkeypatch) -> list[int]:
    """Count the board's blocks on wake-up lists (a one-item list, updated in place)."""
    pops = [0]
    pop_token = board._pop_token

    def counted(*args, **kwargs):
        pops[0] += 1
        return pop_token(*args, **kwargs)

    monkeypatch.setattr(board, "_pop_token", counted)
    return pops


def test_idle_wait_after_an_empty_claim_next_only_blocks(redis_board_factory, monkeypatch):
    board = redis_board_factory(lease=30)
    who = unique_owner("idle")
    assert board.claim_next(who, ["f"]) is None  # proves nothing waits
    pops = _blocking_pops(board, monkeypatch)
    with counting_round_trips(board, monkeypatch) as trips:
        for _ in range(5):
            assert board.wait(timeout=0.05, flows=["f"]) is False
        assert trips.count == pops[0] == 5  # one blocking pop per wait: no check, no claim

        poster = redis_board_factory()
        poster.post("j", "f")  # its wake-up token is the wake-up
        assert board.wait(timeout=10, flows=["f"]) is True
    assert trips.count == pops[0] == 6


def test_a_post_wakes_one_idle_waiter_not_all(redis_board_factory):
    """Wake-one: every idle waiter blocks on the flow's wake-up list; one post
    leaves one token, so exactly one waiter wakes; its claim hands a wake-up on
    when more jobs wait."""
    poster = redis_board_factory()
    waiters = [redis_board_factory(lease=30) for _ in range(3)]
    who = [unique_owner(f"w{n}") for n in range(3)]
    for board, name in zip(waiters, who, strict=True):
        assert board.claim_next(name, ["f"]) is None
    woken: list[int] = []
    lock = threading.Lock()

    def idle(n: int) -> None:
        if waiters[n].wait(timeout=3, flows=["f"]):
            with lock:
                woken.append(n)

    threads = [threading.Thread(target=idle, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    first = poster.post("j1", "f")
    for thread in threads:
        thread.join(10)
    assert len(woken) == 1
    n = woken[0]
    # Two more jobs leave two more tokens: another waiter wakes for them.
    poster.post("j2", "f")
    poster.post("j3", "f")
    claimed = waiters[n].claim_next(who[n], ["f"])
    assert claimed is not None and claimed.job_id == first.id
    other = (n + 1) % 3
    assert waiters[other].wait(timeout=10, flows=["f"]) is True
    assert waiters[other].claim_next(who[other], ["f"]) is not None


def test_wait_wakes_when_a_dead_owners_lease_runs_out(redis_board_factory, monkeypatch):
    waiter = redis_board_factory(lease=30)  # its own lease is no clock for waking up
    owner = redis_board_factory(lease=0.5)
    seen = threading.Event()
    waiter.add_listener(lambda event: event.kind == "claimed" and seen.set())
    job = owner.post("j", "f")
    dead = owner.claim(job, unique_owner("dead"))  # never renewed: its owner is gone
    assert seen.wait(10)  # the waiter has heard of the post and the claim
    who = unique_owner("waiter")
    assert waiter.claim_next(who) is None  # learns when the first lease ends
    with counting_round_trips(waiter, monkeypatch) as trips:
        assert waiter.wait(timeout=20) is True  # at that lease end, not after 30 s
    assert trips.count == 1  # it looked once, when the lease had ended
    taken = waiter.claim_next(who)
    assert taken is not None and taken.job_id == job.id and taken.token == dead.token + 1


def test_idle_knowledge_is_voided_by_wakes_and_shortened_by_claims():
    idle = IdleKnowledge(longest=30.0)
    sent = time.monotonic()
    mark = idle.mark()
    idle.quiet(frozenset({"f"}), mark, sent, server_now=1000.0, lease_end=1020.0)
    until = idle.until(frozenset({"f"}))
    assert until == pytest.approx(sent + 20.0)
    assert idle.until(None) is None  # a check of other flows proves nothing here
    idle.claimed(1005.0)  # a claim by event: its lease ends first
    assert idle.until(frozenset({"f"})) == pytest.approx(sent + 5.0)
    idle.woken()  # a post: ask the server again
    assert idle.until(frozenset({"f"})) is None
    late = idle.mark()
    idle.woken()  # an event while a check was on its way: that check proves nothing
    idle.quiet(frozenset({"f"}), late, sent, server_now=1000.0, lease_end=None)
    assert idle.until(frozenset({"f"})) is None


def test_an_idle_conductor_does_not_claim_after_every_wait(redis_board_factory, monkeypatch):
    board = redis_board_factory(lease=5)
    calls = count_calls(board, monkeypatch, "claim_next", "wait")
    conductor = Conductor("idle", board, FLOWS)
    conductor.IDLE_WAIT = conductor.LONG_IDLE_WAIT = 0.02  # many wait timeouts in little time
    runner = threading.Thread(target=conductor.run)
    runner.start()
    try:
        wait_until(lambda: calls["wait"] >= 20, timeout=20)
        assert calls["claim_next"] == 1  # no event said work arrived
        job = board.post("j", "steps", {"spec": {}})  # the event wakes it
        wait_until(lambda: board.get(job).state is JobState.COMPLETE, timeout=20)
        assert calls["claim_next"] >= 2
    finally:
        conductor.stop()
        runner.join(30)


def test_stop_interrupts_an_idle_conductors_long_wait(redis_board_factory, monkeypatch):
    board = redis_board_factory(lease=5)
    assert board.WAIT_INTERRUPTIBLE
    pops = _blocking_pops(board, monkeypatch)
    conductor = Conductor("idle", board, FLOWS)
    conductor.LONG_IDLE_WAIT = 300.0  # far beyond the bounded join below
    runner = threading.Thread(target=conductor.run)
    runner.start()
    wait_until(lambda: pops[0] >= 1, timeout=20)  # blocked on the wake-up list
    conductor.stop()  # (an interrupt sent just before the block ends it as well)
    runner.join(20)
    assert not runner.is_alive()  # returned on the interrupt, not after 300 s
