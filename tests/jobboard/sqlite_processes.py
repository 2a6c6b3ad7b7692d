"""Board processes for the SQLite board's multi-process tests.

Every board of a test opens the same file under ``tmp_path`` (one namespace
per test, as for the other backends). :class:`BoardProcess` runs
``python -m tests.jobboard.sqlite_processes ROLE ...`` as a separate OS process that
opens the same file and talks to the test over a line protocol: JSON lines on
stdout, command words on stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jobboard
from jobboard import ClaimStatus, InvalidState, NotOwner, unique_owner
from tests.fixtures import sqlite_url

ROOT = Path(__file__).resolve().parents[2]


class BoardProcess:
    """A child process running one role of :func:`main` against a board file."""

    def __init__(self, role: str, path: Path, namespace: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.jobboard.sqlite_processes", role, str(path), namespace, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        """The next JSON line the child printed (fails with its stderr if it died)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"board process exited {self.proc.returncode}:\n{self.stderr()}")
        return json.loads(line)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Every remaining JSON line, after the child exited with status 0."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"board process failed:\n{err}"
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


# -- the child side -----------------------------------------------------------


_SAY = threading.Lock()


def _say(**fields: Any) -> None:
    with _SAY:  # lines of several threads never mix
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


def _race(board: jobboard.JobBoard, args: argparse.Namespace) -> None:
    """Claim with claim_next and consume until nothing is left; print every claim."""
    who = unique_owner("racer")
    while True:
        claim = board.claim_next(who)
        if claim is None:
            return
        _say(job=claim.job_id, token=claim.token, owner=who)
        board.consume(claim.job_id, who, claim.token, result={"by": who})


def _churn(board: jobboard.JobBoard, args: argparse.Namespace) -> None:
    """Claim with short leases, then consume, abandon or let the lease run out at random.

    Prints every claim and the outcome of every fenced write, until no
    unfinished job is left or ``args.seconds`` pass.
    """
    who = unique_owner("churner")
    rng = random.Random(os.getpid())
    lease = args.lease
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        claim = board.claim_next(who, lease=lease)
        if claim is None:
            if board.job_count == 0:
                return
            board.wait(timeout=lease)
            continue
        job = claim.job.id if claim.job else claim.job_id
        _say(event="claim", job=job, token=claim.token, at=claim.job.claimed_at)
        roll = rng.random()
        if roll < 0.3:
            time.sleep(lease * 1.5)  # the lease runs out under us; the write must be refused
        try:
            board.save_progress(job, who, claim.token, "step", {"token": claim.token})
            if roll < 0.6:
                board.consume(job, who, claim.token, result={"token": claim.token})
                _say(event="consumed", job=job, token=claim.token)
            else:
                board.abandon(job, who, claim.token, reason="churn")
                _say(event="abandoned", job=job, token=claim.token)
        except (NotOwner, InvalidState) as err:  # InvalidState: another owner finished it
            _say(event="refused", job=job, token=claim.token, error=type(err).__name__)


def _waiter(board: jobboard.JobBoard, args: argparse.Namespace) -> None:
    """Wait for a job of ``args.flow``; print when woken and the CPU time spent waiting."""
    _say(ready=True)
    cpu, wall = time.process_time(), time.monotonic()
    woke = board.wait(timeout=args.seconds, flows=[args.flow])
    _say(
        woke=woke,
        at=time.time(),
        waited=time.monotonic() - wall,
        cpu=time.process_time() - cpu,
        polls=board.polls,
    )


def _owner(board: jobboard.JobBoard, args: argparse.Namespace) -> None:
    """Claim a job, never renew it, and report when a cancel and then the loss reach us."""
    claim = board.claim_next(unique_owner("owner"), lease=args.lease)
    assert claim is not None
    _say(job=claim.job_id, token=claim.token)
    deadline = time.monotonic() + args.seconds
    seen_cancel = False
    while time.monotonic() < deadline:
        if not seen_cancel and board.cancel_requested(claim):
            seen_cancel = True
            _say(event="cancel_requested", at=time.time())
        if board.claim_status(claim) is ClaimStatus.LOST:
            _say(event="lost", at=time.time())
            return
        time.sleep(0.005)  # a cheap local check, as a conductor's engine makes between tasks
    _say(event="timeout")


def _idler(board: jobboard.JobBoard, args: argparse.Namespace) -> None:
    """An idle conductor's loop: claim a job of ``args.flow`` or wait; print every claim
    and every time this board reaches the head of its queue of idle boards.

    Consumes each job at once, or with ``--hold`` keeps it (renewing nothing) and
    claims no more. Stdin: ``report`` prints the board's count of looks at the board.
    """
    board.QUEUED_POLL = args.queued_poll  # type: ignore[attr-defined]
    on_head = board._on_head  # type: ignore[attr-defined]

    def told_head() -> None:
        _say(event="head", pid=os.getpid())
        on_head()

    board._on_head = told_head  # type: ignore[attr-defined]

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "report":
                _say(event="report", looks=board.wait_looks)  # type: ignore[attr-defined]

    threading.Thread(target=commands, daemon=True).start()
    who = unique_owner("idler")
    deadline = time.monotonic() + args.seconds
    idle = False
    while time.monotonic() < deadline:
        claim = board.claim_next(who, [args.flow], lease=args.lease)
        if claim is None:
            if not idle:
                idle = True
                _say(event="idle", pid=os.getpid())
            board.wait(timeout=args.seconds, flows=[args.flow])
            continue
        _say(event="claim", job=claim.job_id, pid=os.getpid())
        if args.hold:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return
        board.consume(claim.job_id, who, claim.token)


ROLES = {"race": _race, "churn": _churn, "waiter": _waiter, "owner": _owner, "idler": _idler}


def main(argv: list[str] | None = None) -> None:
    """Entry point of a board process: ``ROLE PATH NAMESPACE [options]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.jobboard.sqlite_processes")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("path")
    parser.add_argument("namespace")
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flow", default="f")
    parser.add_argument("--queued-poll", type=float, default=1.0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args(argv)
    board = jobboard.connect(sqlite_url(args.path), namespace=args.namespace)
    try:
        if args.role in ("race", "churn"):
            _say(ready=True)
            sys.stdin.readline()  # the start line: every racer begins at once
        ROLES[args.role](board, args)
    finally:
        board.close()


if __name__ == "__main__":
    main()
