"""Inside a running job, with real ``conductor run`` processes: progress, cooperative cancel,
stopping for real (``--stop-timeout``, the second SIGTERM) and a heartbeat that dies.

Each test prints its figure (how long a stop took); bounds are generous so a
loaded machine does not fail them, except the 0.5 s a cooperative task gets
to stop after a cancel, which is the promise being tested.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from jobboard import JobState
from tests.conductor.fleet import ROOT, Fleet, board_url_for
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "redis"])
def board_url(request, tmp_path):
    return board_url_for(request.param, request, tmp_path)


def _started(fleet: Fleet, job_id: str, task: str) -> bool:
    return any(r["task"] == task for r in fleet.records("start", job_id))


def _finished(board, job_id: str) -> bool:
    return board.get(job_id).state.finished


def _running_record(board, job_id: str) -> dict | None:
    record = board.load_progress(job_id).get("long")
    return record if record and record.get("state") == "RUNNING" else None


def test_progress_of_the_running_task_is_on_the_board(board, fleet, tmp_path):
    gate = tmp_path / "gate"
    job = board.post("j", "long", {"spec": {"mode": "progress", "steps": 5, "gate": str(gate)}})
    fleet.start("c")
    # The latest report wins: the rate limit may skip some, never the last.
    record = wait_until(
        lambda: (r := _running_record(board, job.id)) and r["progress"]["fraction"] == 1.0 and r,
        timeout=30,
    )
    assert record["progress"]["message"] == "step 5 of 5"
    assert record["progress"]["details"] == {"step": 5}
    assert (record["task_number"], record["task_count"]) == (2, 3)
    assert record["metadata"]["conductor"] == "c"
    assert record["metadata"]["token"] == board.get(job.id).token
    shown = subprocess.run(
        [sys.executable, "-m", "jobboard", "--board", fleet.url, "show", job.id, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    tasks = {t["task"]: t for t in json.loads(shown.stdout)["progress"]}
    assert tasks["long"]["state"] == "RUNNING" and tasks["one"]["state"] == "SUCCESS"
    gate.touch()
    wait_until(lambda: _finished(board, job.id), timeout=30)
    assert board.get(job.id).state is JobState.COMPLETE
    # The finished record replaced the running one.
    assert board.load_progress(job.id)["long"]["state"] == "SUCCESS"


def test_a_cooperative_task_stops_within_half_a_second_of_a_cancel(board, fleet, tmp_path):
    job = board.post("j", "long", {"spec": {"mode": "cooperative", "gate": str(tmp_path / "g")}})
    fleet.start("c")
    wait_until(lambda: _started(fleet, job.id, "long"), timeout=30)
    cancelled_at = time.time()
    board.cancel(job.id)
    stop = wait_until(lambda: fleet.records("stopped:cancelled", job.id), timeout=0.5)[0]
    print(f"\ncancel to task stop ({board.scheme}): {stop['at'] - cancelled_at:.3f}s")
    wait_until(lambda: _finished(board, job.id), timeout=30)
    assert board.get(job.id).state is JobState.CANCELLED
    assert fleet.records("on_cancel:cancelled", job.id)
    assert not _started(fleet, job.id, "three")
    assert {r["task"] for r in fleet.records("revert", job.id)} == {"one"}


def test_a_task_ignoring_the_stop_is_left_behind_and_its_job_resumed_elsewhere(
    board, fleet, tmp_path
):
    gate = tmp_path / "gate"
    job = board.post("j", "long", {"spec": {"mode": "stubborn", "gate": str(gate)}})
    first = fleet.start("first", "--drain-timeout", "0.5", "--stop-timeout", "1")
    wait_until(lambda: _started(fleet, job.id, "long"), timeout=30)
    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    # Drain 0.5 s, stop 1 s: then the job is released and the process exits without its task.
    assert first.wait(30) == 0
    exited = time.monotonic() - signalled
    released = board.get(job.id)
    print(f"\nSIGTERM to exit with a stubborn task ({board.scheme}): {exited:.2f}s")
    assert released.state is JobState.WAITING and released.attempts == 0
    assert "releasing the job without it" in fleet.output("first")
    assert fleet.records("on_cancel:shutdown", job.id)
    gate.touch()
    fleet.start("second")
    wait_until(lambda: _finished(board, job.id), timeout=30)
    assert board.get(job.id).state is JobState.COMPLETE
    done = [(r["task"], r["conductor"]) for r in fleet.records("done", job.id)]
    assert ("one", "first") in done and ("three", "second") in done
    assert ("one", "second") not in done


def test_a_second_sigterm_abandons_at_once(board, fleet, tmp_path):
    job = board.post("j", "long", {"spec": {"mode": "stubborn", "gate": str(tmp_path / "g")}})
    proc = fleet.start("c", "--drain-timeout", "60", "--stop-timeout", "60")
    wait_until(lambda: _started(fleet, job.id, "long"), timeout=30)
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in fleet.output("c"), timeout=10)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    print(f"\nsecond SIGTERM to exit ({board.scheme}): {time.monotonic() - signalled:.2f}s")
    released = board.get(job.id)
    assert released.state is JobState.WAITING and released.attempts == 0


def test_a_dead_heartbeat_stops_the_process_with_a_failure_code(board, fleet):
    board.post("j", "sabotage-heartbeat", {})
    proc = fleet.start("c")
    assert proc.wait(30) == 1
    out = fleet.output("c")
    assert "heartbeat thread died: OverflowError" in out
    assert board.iter_entities() == []
