"""Real conductor processes on real boards: sharing, kill -9, pause, cancel, poison, drain.

Each test starts ``conductor run`` subprocesses on a SQLite file, a real
redis-server or a real ZooKeeper, and reads what tasks did from an
execution log the test flows append to.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from jobboard import JobState
from tests.conductor.fleet import Fleet, board_url_for
from tests.helpers import wait_until

BACKENDS = ["sqlite", "redis", "zookeeper"]

pytestmark = pytest.mark.slow


@pytest.fixture(params=BACKENDS)
def board_url(request, tmp_path):
    """A board URL on a fresh namespace, for each backend."""
    return board_url_for(request.param, request, tmp_path)


def _finished(board, job_id: str) -> bool:
    return board.get(job_id).state.finished


def _started(fleet: Fleet, job_id: str, task: str) -> bool:
    return any(r["task"] == task for r in fleet.records("start", job_id))


def test_many_jobs_shared_by_conductors_are_each_completed_once(board, fleet):
    for n in range(3):
        fleet.start(f"c{n}")
    wait_until(lambda: len(board.iter_entities()) == 3, timeout=30)
    jobs = [board.post(f"j{n}", "steps", {"spec": {"pause": 0.02}}) for n in range(40)]
    wait_until(lambda: all(_finished(board, j.id) for j in jobs), timeout=90)
    assert {board.get(j.id).state for j in jobs} == {JobState.COMPLETE}
    done = Counter((r["job"], r["task"]) for r in fleet.records("done"))
    assert len(done) == 40 * 3 and set(done.values()) == {1}
    assert len({r["conductor"] for r in fleet.records("done")}) >= 2


def test_kill_9_mid_job_is_resumed_without_rerunning_finished_tasks(board, fleet, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    victim = fleet.start("victim")
    wait_until(lambda: _started(fleet, job.id, "two"), timeout=30)
    fleet.start("rescuer")
    wait_until(lambda: len(board.iter_entities()) >= 2, timeout=30)
    # When the owner is killed mid-task...
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait(10)
    gate.touch()
    # ...the other conductor takes the job over once the lease or session runs out.
    wait_until(lambda: (board.find_owner(job.id) or "").startswith("rescuer")
               or _finished(board, job.id), timeout=30, interval=0.005)
    failover = time.monotonic() - killed
    wait_until(lambda: _finished(board, job.id), timeout=30)
    print(f"\nfailover ({board.scheme}): {failover:.2f}s from SIGKILL to the new claim")
    assert board.get(job.id).state is JobState.COMPLETE
    done = fleet.records("done", job.id)
    assert [r["conductor"] for r in done if r["task"] == "one"] == ["victim"]
    assert {r["conductor"] for r in done if r["task"] in ("two", "three")} == {"rescuer"}
    assert board.get(job.id).attempts == 2


def test_paused_conductor_loses_its_claim_and_its_late_writes_are_rejected(board, fleet, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    stale = fleet.start("stale")
    wait_until(lambda: _started(fleet, job.id, "two"), timeout=30)
    stale_owner = board.find_owner(job.id)
    # Given the owner frozen past its lease / session...
    os.kill(stale.pid, signal.SIGSTOP)
    fleet.start("fresh")
    wait_until(lambda: (board.find_owner(job.id) or "").startswith("fresh"), timeout=30)
    gate.touch()
    wait_until(lambda: _finished(board, job.id), timeout=30)
    # ...when it wakes up, its task finishes but nothing it writes is accepted.
    os.kill(stale.pid, signal.SIGCONT)
    wait_until(lambda: "claim lost" in fleet.output("stale"), timeout=30)
    final = board.get(job.id)
    assert final.state is JobState.COMPLETE and final.owner is None
    progress = board.load_progress(job.id)
    assert progress["two"]["metadata"]["conductor"] == "fresh"
    assert progress["three"]["metadata"]["conductor"] == "fresh"
    assert progress["two"]["metadata"]["owner"] != stale_owner
    assert [r["conductor"] for r in fleet.records("done", job.id) if r["task"] == "three"] == ["fresh"]
    assert stale.poll() is None, "the stale conductor must survive losing a claim"


def test_cancel_of_a_running_job(board, fleet, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "steps", {"spec": {"block_at": "two", "gate": str(gate)}})
    fleet.start("c")
    wait_until(lambda: _started(fleet, job.id, "two"), timeout=30)
    assert board.cancel(job.id).cancel_requested
    wait_until(lambda: "cancel requested" in fleet.output("c"), timeout=30)
    gate.touch()
    wait_until(lambda: _finished(board, job.id), timeout=30)
    final = board.get(job.id)
    assert final.state is JobState.CANCELLED, final
    assert not _started(fleet, job.id, "three")
    assert {"one", "two"} <= {r["task"] for r in fleet.records("revert", job.id)}


def test_poison_job_is_trashed_after_max_attempts(board, fleet):
    job = board.post("poison", "steps", {"spec": {"crash_at": "one"}}, max_attempts=2)
    good = board.post("good", "steps", {"spec": {}})
    for n in range(3):
        fleet.start(f"c{n}")
    wait_until(lambda: _finished(board, job.id) and _finished(board, good.id), timeout=60)
    trashed = board.get(job.id)
    assert trashed.state is JobState.TRASHED
    assert "poison" in trashed.last_error
    assert board.get(good.id).state is JobState.COMPLETE
    assert len(fleet.records("start", job.id)) == 2


def test_sigterm_drains_the_running_job(board, fleet):
    job = board.post("j", "steps", {"spec": {"pause": 0.3}})
    proc = fleet.start("c")
    wait_until(lambda: _started(fleet, job.id, "one"), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert board.get(job.id).state is JobState.COMPLETE
    assert board.iter_entities() == []
