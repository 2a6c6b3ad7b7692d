"""Idle SQLite boards of one host queue, so that a post wakes one of them (issue 15, item 4).

Real processes on a real database file: each runs an idle conductor's loop
(:func:`tests.jobboard.sqlite_processes._idler`). With the queued boards'
fallback look slowed to a minute, a job claimed within the test's bound was
claimed by a board that inotify woke, so these tests tell the queue's
hand-over from the fallback; the frozen-head test keeps the fallback short.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import jobboard
from jobboard import JobState
from tests.fixtures import sqlite_url
from tests.helpers import wait_until
from tests.jobboard.sqlite_processes import BoardProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and flock")

#: The queued boards' fallback look: longer than any bound of these tests.
SLOW_FALLBACK = "60"


class Idler(BoardProcess):
    """An idle conductor process; its lines are collected by a thread as they come."""

    def __init__(self, path: Path, namespace: str, *args: str) -> None:
        super().__init__("idler", path, namespace, "--seconds", "120", *args)
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == kind]

    def claimed(self) -> set[str]:
        return {line["job"] for line in self.events("claim")}


@pytest.fixture
def idlers(tmp_path: Path):
    started: list[Idler] = []
    namespace = f"t{uuid.uuid4().hex[:8]}"

    def start(count: int, *args: str) -> list[Idler]:
        for _ in range(count):
            started.append(Idler(tmp_path / "board.db", namespace, *args))
        return started[-count:]

    board = jobboard.connect(sqlite_url(tmp_path / "board.db"), namespace=namespace)
    try:
        yield board, start
    finally:
        for idler in started:
            if idler.proc.poll() is None:
                os.kill(idler.proc.pid, signal.SIGCONT)
            idler.kill()
        board.close()


def _heads(procs: list[Idler]) -> list[Idler]:
    return [p for p in procs if p.events("head")]


def _claimer(procs: list[Idler], job_id: str) -> Idler | None:
    found = [p for p in procs if job_id in p.claimed()]
    assert len(found) <= 1, f"job {job_id} claimed by {len(found)} processes"
    return found[0] if found else None


def test_one_of_several_idle_boards_wakes_per_post(idlers):
    board, start = idlers
    procs = start(4, "--queued-poll", SLOW_FALLBACK)
    wait_until(lambda: all(p.events("idle") for p in procs), timeout=30, message="all idle")
    jobs = 6
    for i in range(jobs):
        job_id = board.post(f"j{i}", "f").id
        wait_until(
            lambda j=job_id: board.get(j).state is JobState.COMPLETE, timeout=20, message="consumed"
        )
    for proc in procs:
        proc.send("report")
    wait_until(lambda: all(p.events("report") for p in procs), message="every board reported")
    looks = [p.events("report")[-1]["looks"] for p in procs]
    # Woken by every commit (post, claim, progress, consume), the four boards looked
    # at the board 18 to 30 times per job; queued, only the head looks after each
    # commit of the others (about 4 a job), and a new head once when its turn comes.
    assert sum(looks) <= 8 * jobs + 3 * len(procs), looks


def test_the_turn_passes_on_when_the_head_claims(idlers):
    board, start = idlers
    procs = start(3, "--queued-poll", SLOW_FALLBACK, "--hold")
    wait_until(lambda: _heads(procs), timeout=30, message="a board reached the head")
    first = board.post("first", "f")
    wait_until(lambda: _claimer(procs, first.id), timeout=20, message="the first job claimed")
    holder = _claimer(procs, first.id)
    second = board.post("second", "f")  # the holder left the queue: the next board wakes
    wait_until(lambda: _claimer(procs, second.id), timeout=20, message="the second job claimed")
    assert _claimer(procs, second.id) is not holder


def test_a_killed_heads_successor_takes_the_next_job(idlers):
    board, start = idlers
    procs = start(2, "--queued-poll", SLOW_FALLBACK)
    wait_until(lambda: _heads(procs), timeout=30, message="a board reached the head")
    (head,) = _heads(procs)
    (other,) = [p for p in procs if p is not head]
    head.kill()  # the kernel drops its lock: the other board is head at once
    wait_until(lambda: other.events("head"), timeout=20, message="the other board is head")
    job = board.post("after-kill", "f")
    wait_until(lambda: _claimer(procs, job.id), timeout=20, message="the job claimed")
    assert _claimer(procs, job.id) is other


def test_a_frozen_idle_head_does_not_hold_a_job_back(idlers):
    board, start = idlers
    procs = start(2, "--queued-poll", "0.5")
    wait_until(lambda: _heads(procs), timeout=30, message="a board reached the head")
    (head,) = _heads(procs)
    (other,) = [p for p in procs if p is not head]
    os.kill(head.proc.pid, signal.SIGSTOP)
    try:
        job = board.post("frozen-head", "f")
        # The frozen head keeps the lock; the queued board's fallback look finds the job.
        wait_until(lambda: _claimer(procs, job.id), timeout=20, message="the job claimed")
        assert _claimer(procs, job.id) is other
        assert not other.events("head")
    finally:
        os.kill(head.proc.pid, signal.SIGCONT)
