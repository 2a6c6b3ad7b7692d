"""A claimed job's progress writer: fenced, rate-limited running records that never hide a finished one."""

from __future__ import annotations

import logging

import pytest

from conductor import states
from conductor.board_progress import BoardProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(memory_board_factory):
    board = memory_board_factory()
    job = board.post("j", "f", {})
    claim = board.claim(job, "me")
    clock = Clock()
    saved: list[str] = []
    progress = BoardProgress(board, claim, {}, "c1", lambda name, rec: saved.append(name), clock=clock)
    progress.position = lambda name: ({"one": 1, "two": 2}[name], 2)
    return board, job, claim, clock, progress, saved


def _running(board, job, task="two"):
    return board.load_progress(job.id).get(task)


def test_reports_are_rate_limited_and_the_latest_wins(setup):
    board, job, claim, clock, progress, _ = setup
    progress.task_moved(states.RUNNING, {"task_name": "two"})
    progress.report("two", {"fraction": 0.1, "message": "a", "details": {}})
    first = _running(board, job)
    assert first["state"] == "RUNNING" and first["progress"]["fraction"] == 0.1
    assert (first["task_number"], first["task_count"]) == (2, 2)
    assert first["metadata"] == {
        "started_at": first["metadata"]["started_at"], "conductor": "c1", "owner": "me",
        "token": claim.token,
    }
    # Within the interval: kept, not written; the latest replaces the earlier one.
    progress.report("two", {"fraction": 0.2, "message": "b", "details": {}})
    progress.report("two", {"fraction": 0.3, "message": "c", "details": {"n": 3}})
    assert _running(board, job)["progress"]["fraction"] == 0.1
    clock.now += BoardProgress.MIN_INTERVAL
    progress.flush()
    latest = _running(board, job)["progress"]
    assert (latest["fraction"], latest["message"], latest["details"]) == (0.3, "c", {"n": 3})


def test_a_long_silent_task_is_announced_once(setup):
    board, job, _, clock, progress, _ = setup
    progress.task_moved(states.RUNNING, {"task_name": "two"})
    progress.flush()
    assert _running(board, job) is None  # too early: short tasks cost no write
    clock.now += BoardProgress.ANNOUNCE_AFTER
    progress.flush()
    assert _running(board, job)["progress"] is None
    assert _running(board, job)["state"] == "RUNNING"


def test_a_finished_record_is_never_replaced_by_a_late_running_one(setup):
    board, job, claim, clock, progress, saved = setup
    progress.task_moved(states.RUNNING, {"task_name": "two"})
    progress.report("two", {"fraction": 0.5, "message": None, "details": {}})
    progress.report("two", {"fraction": 0.9, "message": None, "details": {}})  # pending
    progress.task_moved(states.SUCCESS, {"task_name": "two"})
    progress.save("two", {"state": "SUCCESS", "result": 1, "failure": None, "execution": None,
                          "metadata": {}})
    clock.now += 10
    progress.flush()
    record = _running(board, job)
    assert record["state"] == "SUCCESS" and record["metadata"]["token"] == claim.token
    assert saved == ["two"]


def test_a_stale_owner_writes_no_progress_and_the_task_goes_on(setup, caplog):
    board, job, _, clock, progress, _ = setup
    board.abandon(job.id, "me", board.get(job.id).token, reason="test")
    board.claim(job.id, "other")
    progress.task_moved(states.RUNNING, {"task_name": "two"})
    with caplog.at_level(logging.INFO, logger="conductor.board_progress"):
        progress.report("two", {"fraction": 0.5, "message": None, "details": {}})
    assert _running(board, job) is None
    assert any("not saved" in r.getMessage() for r in caplog.records)


def test_the_last_record_is_held_for_the_consume_or_saved_on_its_own(setup):
    board, job, claim, clock, progress, saved = setup
    # The engine hands over the last task's record: nothing is written yet
    assert progress.hold("two", {"state": "SUCCESS", "result": 2}) is True
    assert _running(board, job) is None and saved == []
    # The conductor takes it for the consume, which stores it in the same write
    held = progress.take_held()
    assert held["two"]["result"] == 2 and held["two"]["metadata"]["token"] == claim.token
    board.consume(job.id, "me", claim.token, progress=held)
    progress.saved_with_outcome(held)
    assert _running(board, job)["result"] == 2 and saved == ["two"]


def test_a_held_record_is_saved_when_the_job_ends_otherwise(setup):
    board, job, claim, clock, progress, saved = setup
    progress.hold("two", {"state": "SUCCESS", "result": 2})
    progress.save_held()  # e.g. before an abandon: the next owner skips the task
    assert _running(board, job)["state"] == "SUCCESS" and saved == ["two"]
    assert progress.take_held() == {}
