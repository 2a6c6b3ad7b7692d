"""No herd, no chatter (issue 15 items 4 and 5): a Redis conductor hears only the
events of its own claims, learns of other conductors' leases from its
heartbeat, and re-reads pauses and schedules only when the heartbeat says they
changed. Counts, never durations: the figures are printed by the bench."""

from __future__ import annotations

import threading

import pytest

from conductor.conductor import Conductor
from jobboard import JobState, schedules, unique_owner
from tests.flows_for_tests import FLOWS
from tests.helpers import wait_until
from tests.jobboard.redis.helpers import count_calls, counting_round_trips

pytestmark = pytest.mark.redis


def _count_events(board, monkeypatch) -> list[str]:
    """The kinds of the events ``board`` decodes (a list, filled in place)."""
    seen: list[str] = []
    on_message = board._on_message

    def counted(data):
        seen.append(data.decode() if isinstance(data, bytes) else data)
        return on_message(data)

    monkeypatch.setattr(board, "_on_message", counted)
    return seen


def test_an_owner_hears_only_the_events_of_its_own_claims(redis_board_factory, monkeypatch):
    idle = redis_board_factory()
    mine = unique_owner("idle")
    assert idle.claim_next(mine, ["f"]) is None  # follows its owner's channel from now on
    idle.add_listener(lambda event: None, held_only=True)  # a conductor's listener
    heard = _count_events(idle, monkeypatch)
    busy = redis_board_factory()
    other = unique_owner("busy")
    for n in range(5):
        job = busy.post(f"j{n}", "f")
        claim = busy.claim(job, other)
        busy.consume(claim, other, claim.token)
    # Its own claim is known from the reply (no event is sent for it), and the cancel
    # request reaches it without a read; then its own consume sends no event either.
    job = busy.post("mine", "f")
    claim = idle.claim_next(mine, ["f"])
    assert claim is not None and claim.job_id == job.id
    busy.cancel(job)
    wait_until(lambda: idle.cancel_requested(job))
    idle.consume(claim, mine, claim.token)
    later = busy.post("later", "f")
    assert idle.claim_next(mine, ["f"]) is not None
    busy.cancel(later)  # a later event to it: every earlier one is in once this is
    wait_until(lambda: idle.cancel_requested(later))
    kinds = [event.split('"kind":"')[1].split('"')[0] for event in heard]
    # Nothing of its own claims and consume, nor of the other five jobs.
    assert kinds == ["cancel_requested", "cancel_requested"]


def test_an_observer_still_hears_every_event(redis_board_factory):
    watcher = redis_board_factory()
    events: list[tuple[str, str | None]] = []
    watcher.add_listener(lambda event: events.append((event.kind, event.job_id)))
    worker = redis_board_factory()
    who = unique_owner("w")
    job = worker.post("j", "f")
    claim = worker.claim_next(who, ["f"])
    worker.consume(claim, who, claim.token)
    wait_until(lambda: ("consumed", job.id) in events)
    assert events == [("posted", job.id), ("claimed", job.id), ("consumed", job.id)]
    assert watcher.wait_for(job, timeout=10).state is JobState.COMPLETE


def test_a_forced_trash_reaches_the_owner_on_its_channel(redis_board_factory):
    owner_board = redis_board_factory()
    operator = redis_board_factory()
    who = unique_owner("owner")
    job = operator.post("j", "f")
    claim = owner_board.claim(job, who)
    operator.trash(job, "operator", force=True)
    wait_until(lambda: job.id in owner_board._lost)
    assert owner_board.claim_status(claim).value == "lost"


def test_the_heartbeat_tells_when_pauses_or_schedules_changed(redis_board_factory):
    board = redis_board_factory()
    operator = redis_board_factory()

    def beat() -> int:
        board.register_entity("c", "conductor", {})
        version = board.settings_version()
        assert version is not None
        return version

    first = beat()
    assert beat() == first  # nothing changed
    operator.pause_flow("f", reason="incident")
    paused = beat()
    assert paused > first
    operator.resume_flow("f")
    resumed = beat()
    assert resumed > paused
    schedules.add_schedule(operator, "tick", "f", every=3600)
    added = beat()
    assert added > resumed
    operator.remove_schedule("tick")
    assert beat() > added


def test_a_waiter_hears_of_a_dead_owners_lease_from_the_heartbeat(redis_board_factory):
    waiter = redis_board_factory(lease=30)  # no event tells it of the claim below
    owner = redis_board_factory(lease=0.5)
    who = unique_owner("waiter")
    assert waiter.claim_next(who, ["f"]) is None  # proves nothing waits
    waiter.register_entity("waiter", "conductor", {})  # heartbeats come: it trusts them
    job = owner.post("j", "f")
    dead = owner.claim_next(unique_owner("dead"), ["f"])  # never renewed: its owner is gone
    assert dead is not None and dead.job_id == job.id
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(waiter.wait(20, flows=["f"])))
    thread.start()
    wait_until(lambda: waiter._blocked)  # blocked on the wake-up list, for up to 20 s
    waiter.register_entity("waiter", "conductor", {})  # the next heartbeat reads the lease
    thread.join(25)
    assert woke == [True]  # at that lease end, not at the wait's 20 s timeout
    again = waiter.claim_next(who, ["f"])
    assert again is not None and again.job_id == job.id and again.token > dead.token


def test_an_idle_conductor_sends_only_its_heartbeat(redis_board_factory, monkeypatch):
    board = redis_board_factory(lease=0.3)  # a heartbeat every 0.3 s
    operator = redis_board_factory()
    calls = count_calls(board, monkeypatch, "register_entity", "paused_flows", "get_schedules")
    conductor = Conductor("idle", board, FLOWS)
    runner = threading.Thread(target=conductor.run)
    runner.start()
    try:
        wait_until(lambda: calls["register_entity"] >= 3, timeout=20)  # settled
        reads = calls["paused_flows"], calls["get_schedules"]
        with counting_round_trips(board, monkeypatch) as trips:
            beats = calls["register_entity"]
            wait_until(lambda: calls["register_entity"] >= beats + 5, timeout=20)
            sent = trips.count
            done = calls["register_entity"] - beats
        assert (calls["paused_flows"], calls["get_schedules"]) == reads  # nothing changed
        assert done <= sent <= done + 1  # heartbeats (and at most one renewed block)
        operator.pause_flow("steps", reason="incident")  # the next heartbeat sees it
        wait_until(lambda: "steps" in conductor._paused, timeout=20)
        assert calls["paused_flows"] == reads[0] + 1
        operator.resume_flow("steps")
        wait_until(lambda: "steps" not in conductor._paused, timeout=20)
        job = operator.post("j", "steps", {"spec": {}})  # an idle conductor still works
        wait_until(lambda: operator.get(job).state is JobState.COMPLETE, timeout=20)
    finally:
        conductor.stop()
        runner.join(30)
    assert not runner.is_alive()


def test_an_owner_that_also_observes_hears_each_event_once(redis_board_factory):
    board = redis_board_factory()
    who = unique_owner("both")
    assert board.claim_next(who, ["f"]) is None  # follows its owner's channel
    kinds: list[tuple[str, str | None]] = []
    board.add_listener(lambda event: kinds.append((event.kind, event.job_id)))  # and all
    job = board.post("j", "f")
    claim = board.claim_next(who, ["f"])
    board.consume(claim, who, claim.token)
    wait_until(lambda: ("consumed", job.id) in kinds)
    other = redis_board_factory().post("k", "f")  # one more event: the ones above are all in
    wait_until(lambda: ("posted", other.id) in kinds)
    assert kinds == [
        ("posted", job.id), ("claimed", job.id), ("consumed", job.id), ("posted", other.id)
    ]
