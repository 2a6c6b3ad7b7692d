"""The admin command next to real ``conductor run`` processes on a SQLite board: a running
task's progress in ``show --json``, ``cancel --force`` of a task that ignores cancels,
``pause`` / ``resume`` of a flow, and what the conductor logs meanwhile."""

from __future__ import annotations

import json
import re
import time

import pytest

import jobboard
from jobboard import JobState
from jobboard.admin.cli import EXIT_OK
from tests.admin.helpers import jb, jb_json
from tests.conductor.fleet import Fleet, board_url_for
from tests.helpers import wait_until
from tests.servers import free_port

pytestmark = pytest.mark.slow

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def url(request, tmp_path):
    return board_url_for("sqlite", request, tmp_path)


@pytest.fixture
def board(url):
    b = jobboard.connect(url)
    yield b
    b.close()


@pytest.fixture
def fleet(url, tmp_path, request):
    f = Fleet(url, tmp_path)
    yield f
    f.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name in f.procs:
            print(f"--- {name} ---\n{f.output(name)[-4000:]}")


def _log_records(text: str) -> list[dict]:
    """The JSON log records of a conductor's output (other lines are not logs)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _running(url: str, job_id: str) -> list[dict]:
    return jb_json(url, "show", job_id)["running"]


def test_progress_cancel_force_and_the_conductor_log(url, board, fleet, tmp_path):
    # Given a conductor logging JSON, with metrics
    fleet.start("c", "--log-format", "json", "--metrics-port", str(free_port()))
    gate = tmp_path / "gate"
    # When a task reports progress, `show --json` sees it while the task runs
    progress = board.post("progress", "long", {"spec": {"mode": "progress", "gate": str(gate)}})
    wait_until(
        lambda: [t for t in _running(url, progress.id) if t["fraction"] == 1.0], timeout=30
    )
    (task,) = _running(url, progress.id)
    assert task["task"] == "long" and (task["task_number"], task["task_count"]) == (2, 3)
    assert task["message"] == "step 5 of 5" and task["details"] == {"step": 5}
    listed = jb(url, "list", env={"COLUMNS": "160"})
    assert "task 2 of 3 long 100%" in listed.stdout
    gate.touch()
    wait_until(lambda: board.get(progress.id).state is JobState.COMPLETE, timeout=30)
    assert jb_json(url, "show", progress.id)["running"] == []
    # And a failing job is logged with its error
    failing = board.post("failing", "steps", {"spec": {"fail_at": "two"}})
    wait_until(lambda: board.get(failing.id).state is JobState.FAILED, timeout=30)
    # When a task ignores cancels, cancel --force ends its job after the grace period
    stuck_gate = tmp_path / "stuck-gate"
    stuck = board.post("stuck", "long", {"spec": {"mode": "stubborn", "gate": str(stuck_gate)}})
    wait_until(lambda: _running(url, stuck.id), timeout=30)
    done = jb(url, "cancel", stuck.id, "--force", "--grace", "1s", "--reason", "stuck", "--yes")
    assert done.returncode == EXIT_OK, done.stderr
    assert "force-cancelled" in done.stdout
    ended = board.get(stuck.id)
    assert ended.state is JobState.CANCELLED and ended.last_error == "stuck"
    # Then the old owner says the operator ended it, and stays up for the next job
    wait_until(lambda: "job ended by operator" in fleet.output("c"), timeout=30)
    stuck_gate.touch()  # the stubborn task returns; its late writes are refused quietly
    after = board.post("after", "steps", {"spec": {}})
    wait_until(lambda: board.get(after.id).state is JobState.COMPLETE, timeout=30)
    assert board.get(stuck.id).state is JobState.CANCELLED
    fleet.stop_all()

    records = _log_records(fleet.output("c"))
    assert records
    assert all(ISO.match(r["ts"]) for r in records)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], records
    for r in records:
        assert "Job(" not in r["message"] and "bound method" not in r["message"], r
        if re.search(r"\bjob [0-9a-f]{32}\b", r["message"]):
            assert {"job_id", "flow", "conductor"} <= set(r), r
            assert r["job_id"] in r["message"]
    about_stuck = [r for r in records if r.get("job_id") == stuck.id]
    assert sum("job ended by operator" in r["message"] for r in about_stuck) == 1
    assert sum("claim lost" in r["message"] for r in about_stuck) == 0
    assert all(r["level"] in ("INFO", "WARNING", "DEBUG") for r in about_stuck)
    (failed_line,) = [r for r in records if r.get("event") == "job_failed"]
    assert failed_line["job_id"] == failing.id and "two failed on purpose" in failed_line["message"]
    assert sum("/metrics" in r["message"] for r in records) == 1


def test_a_paused_flow_is_not_claimed_until_resumed(url, board, fleet, tmp_path):
    fleet.start("c")
    wait_until(lambda: board.iter_entities(), timeout=30)
    # Given the steps flow paused while the conductor runs
    assert jb(url, "pause", "steps", "--reason", "incident").returncode == EXIT_OK
    wait_until(lambda: "flow steps paused" in fleet.output("c"), timeout=30)
    # When a high-priority job of the paused flow and a job of another flow are posted
    held = board.post("held", "steps", {"spec": {}}, priority="very_high")
    gate = tmp_path / "gate"
    gate.touch()
    other = board.post("other", "long", {"spec": {"gate": str(gate)}}, priority="very_low")
    # Then only the other one runs
    wait_until(lambda: board.get(other.id).state is JobState.COMPLETE, timeout=30)
    assert board.get(held.id).state is JobState.WAITING
    assert "steps  incident" in jb(url, "stats").stdout
    # And once resumed, the held job runs
    assert jb(url, "resume", "steps").returncode == EXIT_OK
    wait_until(lambda: board.get(held.id).state is JobState.COMPLETE, timeout=30)
    assert "flow steps resumed" in fleet.output("c")


def test_a_lost_claim_is_logged_once(url, board, fleet, tmp_path):
    import os
    import signal

    proc = fleet.start("c", "--log-format", "json")
    gate = tmp_path / "gate"
    job = board.post("slow", "long", {"spec": {"mode": "stubborn", "gate": str(gate)}})
    wait_until(lambda: board.get(job.id).state is JobState.CLAIMED, timeout=30)
    # Given a conductor frozen until its lease ran out
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: board.get(job.id).state is JobState.WAITING, timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # When it wakes up, its task still running for several heartbeats
    wait_until(lambda: "claim lost" in fleet.output("c"), timeout=30)
    noticed = time.time()
    stamp = board.post("marker", "steps", {"spec": {}})  # waits: the only slot is busy
    # (a registration refresh comes after about 15 lease renewal rounds)
    wait_until(lambda: any(e.last_seen > noticed for e in board.iter_entities()), timeout=30)
    gate.touch()
    wait_until(lambda: board.get(job.id).state is JobState.COMPLETE, timeout=30)
    wait_until(lambda: board.get(stamp.id).state is JobState.COMPLETE, timeout=30)
    fleet.stop_all()
    # Then the loss was logged once, as a warning, and nothing at ERROR
    records = _log_records(fleet.output("c"))
    lost = [r for r in records if r.get("job_id") == job.id and "claim lost" in r["message"]]
    assert len(lost) == 1 and lost[0]["level"] == "WARNING", lost
    about_job = [r for r in records if job.id in r["message"]]
    assert about_job and all(r.get("job_id") == job.id for r in about_job), about_job
    assert sum("not saved" in r["message"] for r in about_job) <= 1
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], records
