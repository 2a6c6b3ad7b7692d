"""What the failover tests share: posting a batch, waiting for it to finish
while a server dies, and the figures they print."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import jobboard
from jobboard import JobBoard, JobState
from tests.conductor.fleet import ROOT, Fleet
from tests.helpers import wait_until

__all__ = [
    "Fleet",
    "executions",
    "jobboard_cli",
    "post_batch",
    "running",
    "states",
    "wait_all_finished",
]


def post_batch(board: JobBoard, count: int, pause: float = 0.05) -> list[str]:
    """Post ``count`` jobs of the three-step test flow; their ids."""
    return [board.post(f"ha-{i}", "steps", {"spec": {"pause": pause}}).id for i in range(count)]


def states(board: JobBoard, ids: list[str]) -> Counter[JobState]:
    """How many of ``ids`` are in each state (a read the board retries)."""
    return Counter(board.get(job_id).state for job_id in ids)


def _finished_or_none(board: JobBoard, ids: list[str]) -> bool:
    try:
        return all(board.get(job_id).state.finished for job_id in ids)
    except jobboard.BoardUnavailable:
        return False  # the server is failing over: ask again


def wait_all_finished(board: JobBoard, ids: list[str], timeout: float) -> float:
    """Wait until every job is finished; the seconds it took."""
    started = time.monotonic()
    wait_until(lambda: _finished_or_none(board, ids), timeout, 0.1, "every job finished")
    return time.monotonic() - started


def executions(fleet: Fleet, event: str = "done") -> Counter[tuple[str, str]]:
    """How many times each (job, task) recorded ``event`` across the fleet."""
    return Counter((r["job"], r["task"]) for r in fleet.records(event))


def some_done(board: JobBoard, ids: list[str], count: int) -> bool:
    try:
        return states(board, ids)[JobState.COMPLETE] >= count
    except jobboard.BoardUnavailable:
        return False


@contextlib.contextmanager
def running(*fleets: Fleet) -> Iterator[None]:
    """Stop the fleets' conductors at the end; print their output if the test failed."""
    try:
        yield
    except BaseException:
        for fleet in fleets:
            for proc in fleet.procs.values():
                if proc.poll() is None:  # its threads' stacks go to its output
                    os.kill(proc.pid, signal.SIGABRT)
                    proc.wait(10)
            for name in fleet.procs:
                print(f"--- {name} ---\n{fleet.output(name)[-6000:]}")
        raise
    finally:
        for fleet in fleets:
            fleet.stop_all()


def jobboard_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``jobboard`` command on a board URL."""
    return subprocess.run(
        [sys.executable, "-m", "jobboard", "--board", url, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
