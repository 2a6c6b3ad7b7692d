"""The conductor daemon in-process, on the in-memory board (real engine, real threads)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import jobboard
from conductor.conductor import Conductor, ConductorEvents
from jobboard import JobState
from jobboard.memory import MemoryBoard
from tests import flows_for_tests
from tests.flows_for_tests import FLOWS
from tests.helpers import wait_until


@pytest.fixture
def board():
    name = f"conductor-{threading.get_ident()}-{id(object())}"
    b = jobboard.connect(f"memory://{name}?lease=2")
    flows_for_tests.RECORDED.clear()
    yield b
    b.close()
    MemoryBoard.reset(name)


class Running:
    """Conductors run in threads; stopped and joined at the end of a test."""

    def __init__(self) -> None:
        self.items: list[tuple[Conductor, threading.Thread]] = []

    def start(self, board, name: str = "c", **kwargs) -> Conductor:
        conductor = Conductor(name, board, FLOWS, **kwargs)
        thread = threading.Thread(target=conductor.run, name=f"run-{name}", daemon=True)
        thread.start()
        self.items.append((conductor, thread))
        return conductor

    def stop_all(self) -> None:
        for conductor, _ in self.items:
            conductor.stop(timeout=5)
        for conductor, thread in self.items:
            thread.join(20)
            assert not thread.is_alive(), f"{conductor.name} did not stop"


@pytest.fixture
def conductors():
    running = Running()
    yield running
    running.stop_all()


def _events(kind: str, job_id: str | None = None) -> list[dict]:
    return [
        r for r in flows_for_tests.RECORDED
        if r["event"] == kind and (job_id is None or r["job"] == job_id)
    ]


def _finished(board, job_id: str) -> bool:
    return board.get(job_id).state.finished


def test_jobs_shared_by_conductors_complete_exactly_once(board, conductors):
    jobs = [board.post(f"j{n}", "steps", {"spec": {}}) for n in range(30)]
    for n in range(3):
        conductors.start(board, f"c{n}")
    wait_until(lambda: all(_finished(board, j.id) for j in jobs), timeout=30)
    assert {board.get(j.id).state for j in jobs} == {JobState.COMPLETE}
    done = Counter((r["job"], r["task"]) for r in _events("done"))
    assert set(done.values()) == {1}
    assert len(done) == 30 * 3
    result = board.get(jobs[0].id).result
    assert result["three_result"] == "three-ok"


def test_task_failure_reverts_and_fails_the_job(board, conductors):
    job = board.post("j", "steps", {"spec": {"fail_at": "two"}})
    conductors.start(board)
    wait_until(lambda: _finished(board, job.id), timeout=10)
    failed = board.get(job.id)
    assert failed.state is JobState.FAILED
    assert "two" in failed.last_error and "failed on purpose" in failed.last_error
    assert [r["task"] for r in _events("revert")][:1] == ["two"] or "one" in [
        r["task"] for r in _events("revert")
    ]
    assert "one" in [r["task"] for r in _events("revert")]
    assert not _events("start", job.id) or "three" not in [r["task"] for r in _events("start")]


def test_cancel_stops_a_running_job_and_reverts(board, conductors, tmp_path: Path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    conductors.start(board)
    wait_until(lambda: any(r["task"] == "two" for r in _events("start", job.id)), timeout=10)
    assert board.cancel(job.id).cancel_requested
    gate.touch()
    wait_until(lambda: _finished(board, job.id), timeout=10)
    cancelled = board.get(job.id)
    assert cancelled.state is JobState.CANCELLED
    assert "two" in cancelled.last_error or "three" in cancelled.last_error
    assert "three" not in [r["task"] for r in _events("start", job.id)]
    assert {"one", "two"} <= {r["task"] for r in _events("revert", job.id)}


def test_claim_taken_away_is_noticed_and_another_conductor_resumes(board, conductors, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    first = conductors.start(board, "first")
    lost = threading.Event()
    first.notifier.register(ConductorEvents.CLAIM_LOST, lambda event, details: lost.set())
    wait_until(lambda: any(r["task"] == "two" for r in _events("start", job.id)), timeout=10)
    stale_owner = board.get(job.id).owner
    # When an operator takes the job away, another conductor picks it up...
    board.abandon(job.id, "operator", force=True, reason="test")
    second = conductors.start(board, "second")
    wait_until(lambda: board.find_owner(job.id) not in (None, stale_owner), timeout=10)
    gate.touch()
    wait_until(lambda: _finished(board, job.id), timeout=15)
    assert board.get(job.id).state is JobState.COMPLETE
    assert lost.wait(10)
    # ...the first task is not re-run, and every saved record after it comes from the new owner.
    assert [r["conductor"] for r in _events("done", job.id) if r["task"] == "one"] == ["first"]
    progress = board.load_progress(job.id)
    assert progress["three"]["metadata"]["conductor"] == "second"
    assert progress["two"]["metadata"]["conductor"] == "second"
    assert second.stats[ConductorEvents.CONSUMED] == 1


def test_graceful_stop_lets_the_running_job_finish(board, conductors):
    job = board.post("j", "steps", {"spec": {"pause": 0.2}})
    conductor = conductors.start(board)
    wait_until(lambda: _events("start", job.id), timeout=10)
    conductor.stop(timeout=10)
    assert conductor.wait(15)
    assert board.get(job.id).state is JobState.COMPLETE


def test_stop_past_drain_timeout_abandons_and_keeps_progress(board, conductors, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    conductor = conductors.start(board, "first")
    wait_until(lambda: any(r["task"] == "two" for r in _events("start", job.id)), timeout=10)
    conductor.stop(timeout=0.1)
    # Open the gate only once the drain timeout has passed and the engine was told to suspend.
    wait_until(lambda: any(r.stop_reason for r in conductor.running_jobs), timeout=10)
    gate.touch()
    assert conductor.wait(15)
    released = board.get(job.id)
    assert released.state is JobState.WAITING
    assert released.attempts == 0  # a shutdown is not the job's fault
    assert set(board.load_progress(job.id)) >= {"one"}
    conductors.start(board, "second")
    wait_until(lambda: _finished(board, job.id), timeout=10)
    assert board.get(job.id).state is JobState.COMPLETE
    assert Counter(r["task"] for r in _events("done", job.id))["one"] == 1


def test_a_worker_claims_its_next_jobs_itself_and_an_idle_conductor_still_wakes(
    board, conductors, tmp_path
):
    gate = tmp_path / "gate"
    conductor = conductors.start(board)
    claimed_on: dict[str, str] = {}
    conductor.notifier.register(
        ConductorEvents.CLAIMED,
        lambda _event, details: claimed_on.setdefault(
            details["job_id"], threading.current_thread().name
        ),
    )
    first = board.post("first", "steps", {"spec": {"block_at": "one", "gate": str(gate)}})
    wait_until(lambda: _events("start", first.id), timeout=10)
    rest = [board.post(f"j{n}", "steps", {"spec": {}}) for n in range(4)]
    gate.touch()
    wait_until(lambda: all(_finished(board, j.id) for j in rest), timeout=30)
    # The claim loop claimed the first job; the busy worker claimed the others itself.
    assert claimed_on[first.id] == "run-c"
    assert {claimed_on[j.id] for j in rest} == {"c-job-0"}
    # Its last claim found nothing: the claim loop waits for work and takes a later post.
    late = board.post("late", "steps", {"spec": {}})
    wait_until(lambda: _finished(board, late.id), timeout=10)
    assert board.get(late.id).state is JobState.COMPLETE
    assert conductor.stats[ConductorEvents.CLAIMED] == 6


def test_finished_jobs_leave_nothing_to_the_cycle_collector(board, conductors):
    conductor = conductors.start(board)
    warm = board.post("warm", "steps", {"spec": {}})
    wait_until(lambda: _finished(board, warm.id), timeout=10)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        jobs = [board.post(f"j{n}", "steps", {"spec": {}}) for n in range(10)]
        wait_until(lambda: all(_finished(board, j.id) for j in jobs), timeout=30)
        wait_until(lambda: not conductor.running_jobs, timeout=10)
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    # Freed by reference counting as each job ended: none waited for a collection.
    job_objects = {"RunningJob", "SerialActionEngine", "AtomRuntime", "BoardProgress", "JobContext"}
    assert not kinds & job_objects


def test_only_served_flows_are_claimed(board, conductors):
    other = board.post("other", "not-served", {})
    mine = board.post("mine", "steps", {"spec": {}})
    conductors.start(board)
    wait_until(lambda: _finished(board, mine.id), timeout=10)
    assert board.get(other.id).state is JobState.WAITING
    assert board.get(other.id).attempts == 0


def test_result_too_large_fails_the_job_without_retrying(board, conductors):
    job = board.post("big", "big-result", {})
    conductors.start(board)
    wait_until(lambda: _finished(board, job.id), timeout=10)
    failed = board.get(job.id)
    assert failed.state is JobState.FAILED
    assert "over the limit" in failed.last_error
    assert failed.attempts == 1


def test_tasks_see_the_fencing_token(board, conductors):
    job = board.post("j", "steps", {"spec": {}})
    conductors.start(board)
    wait_until(lambda: _finished(board, job.id), timeout=10)
    tokens = {r["token"] for r in _events("done", job.id)}
    assert tokens == {board.get(job.id).token}


def test_bad_store_fails_the_job_with_a_clear_error(board, conductors):
    job = board.post("j", "steps", {"wrong": 1})
    conductors.start(board)
    wait_until(lambda: _finished(board, job.id), timeout=10)
    failed = board.get(job.id)
    assert failed.state is JobState.FAILED
    assert "spec" in failed.last_error


def test_the_job_result_holds_the_flow_outputs_only(board, conductors):
    job = board.post("j", "steps", {"spec": {}})
    conductors.start(board)
    wait_until(lambda: _finished(board, job.id), timeout=10)
    assert board.get(job.id).result == {
        "one_result": "one-ok", "two_result": "two-ok", "three_result": "three-ok",
    }


def test_a_dead_heartbeat_stops_the_conductor_and_turns_its_health_red(board, conductors):
    conductor = conductors.start(board)
    wait_until(lambda: conductor.healthy()[0], timeout=10)

    def renew() -> None:
        raise OverflowError("cannot convert float infinity to integer")

    conductor._renew = renew  # the heartbeat's next round dies
    assert conductor.wait(15), "a conductor without renewals must not run on"
    ok, reason = conductor.healthy()
    assert not ok and "heartbeat thread died" in reason and "OverflowError" in reason
    assert conductor.fatal_error == reason


def test_finishing_a_job_is_not_mistaken_for_losing_its_claim(board, conductors, caplog):
    jobs = [board.post(f"j{n}", "steps", {"spec": {}}) for n in range(5)]
    with caplog.at_level(logging.INFO, logger="conductor"):
        conductor = conductors.start(board)
        wait_until(lambda: all(_finished(board, j.id) for j in jobs), timeout=30)
    assert conductor.stats[ConductorEvents.CONSUMED] == 5
    assert conductor.stats[ConductorEvents.CLAIM_LOST] == 0
    assert not [r for r in caplog.records if "claim" in r.getMessage() and "lost" in r.getMessage()]


def test_on_redis_a_worker_claims_its_next_job_in_its_consume(
    redis_board_factory, conductors, tmp_path
):
    # Given a Redis board whose consume_and_claim_next calls are recorded
    board = redis_board_factory()
    flows_for_tests.RECORDED.clear()
    calls: list = []
    fold = board.consume_and_claim_next

    def recorded(*args, **kwargs):
        calls.append(out := fold(*args, **kwargs))
        return out

    board.consume_and_claim_next = recorded
    # And a conductor with a 1 s lease busy with a first job while more are posted
    conductor = conductors.start(board, lease=1)
    gate = tmp_path / "gate"
    first = board.post("first", "steps", {"spec": {"block_at": "one", "gate": str(gate)}})
    wait_until(lambda: _events("start", first.id), timeout=10)
    slow = board.post("slow", "steps", {"spec": {"pause": 0.5}})  # outlives its lease
    rest = [board.post(f"j{n}", "steps", {"spec": {}}) for n in range(3)]
    # When the first job ends
    gate.touch()
    jobs = [first, slow, *rest]
    wait_until(lambda: all(_finished(board, j.id) for j in jobs), timeout=30)
    # Then each next job was claimed by the consume of the one before, the last found none
    assert [c.claim and c.claim.job_id for c in calls] == [slow.id, *(j.id for j in rest), None]
    assert all(c.claim_error is None for c in calls)
    # And those claims ran as any other: each task once, leases renewed, nothing lost
    assert {board.get(j.id).state for j in jobs} == {JobState.COMPLETE}
    assert board.get(slow.id).attempts == 1
    done = Counter((r["job"], r["task"]) for r in _events("done"))
    assert len(done) == 5 * 3 and set(done.values()) == {1}
    assert conductor.stats[ConductorEvents.CLAIMED] == 5
    assert conductor.stats.get(ConductorEvents.CLAIM_LOST, 0) == 0
    assert all(board.held_claim(j.id) is None for j in jobs)
    # And the claim loop still takes a later post once the worker found nothing
    late = board.post("late", "steps", {"spec": {}})
    wait_until(lambda: _finished(board, late.id), timeout=10)
    assert board.get(late.id).state is JobState.COMPLETE


def test_on_redis_claims_in_another_slot_never_put_off_a_running_jobs_renewals(
    redis_board_factory, conductors, tmp_path
):
    # Given a conductor with two slots and a 1 s lease, one slot running a long job
    board = redis_board_factory()
    flows_for_tests.RECORDED.clear()
    conductor = conductors.start(board, lease=1, max_simultaneous_jobs=2)
    gate = tmp_path / "gate"
    long_job = board.post("long", "steps", {"spec": {"block_at": "one", "gate": str(gate)}})
    wait_until(lambda: _events("start", long_job.id), timeout=10)
    # When the other slot claims a short job more often than the renewals tick, for
    # longer than the lease
    short: list = []
    ends = time.monotonic() + 2.5
    while time.monotonic() < ends and len(short) < 1000:
        short.append(board.post(f"s{len(short)}", "steps", {"spec": {}}))
        wait_until(lambda: _finished(board, short[-1].id), timeout=10)
    gate.touch()
    wait_until(lambda: _finished(board, long_job.id), timeout=30)
    # Then the long job kept its claim: renewed all along, run once
    assert board.get(long_job.id).state is JobState.COMPLETE
    assert board.get(long_job.id).attempts == 1
    assert conductor.stats.get(ConductorEvents.CLAIM_LOST, 0) == 0
