"""Failover: kill -9 the owner of a claimed job, time until another conductor claims it.

Each round posts one ``hold`` job (its task waits for a gate file), waits
until a conductor claims it, SIGKILLs that conductor at a random moment in
the following second, and polls the job every few milliseconds until a
surviving conductor owns it. Then the gate is opened so the job completes,
and a fresh conductor replaces the dead one: every round starts with the
same number of idle conductors.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import jobboard
from bench.common import median, wait_until
from bench.fleet import Fleet
from bench.servers import Servers

#: Conductors alive at the start of each round (the owner and its rescuers).
FLEET_SIZE = 2
#: How often the bench reads the job while it waits for the new owner (seconds).
POLL = 0.005
#: The owner is killed at a random moment (seeded per round) this many seconds after
#: its claim is seen, so kills fall anywhere in the renewal and wake-up cycles.
KILL_WITHIN = 1.0


def _owner_name(board: jobboard.JobBoard, job_id: str) -> str | None:
    owner = board.get(job_id).owner
    return owner.split("@", 1)[0] if owner else None


def _round(board: jobboard.JobBoard, fleet: Fleet, gate: Path, n: int) -> float:
    """One kill: seconds from SIGKILL of the owner to the claim by another conductor."""
    job = board.post(f"hold-{n}", "hold", {"gate": str(gate)})
    victim = wait_until(lambda: _owner_name(board, job.id), 60, POLL, "first claim")
    time.sleep(random.Random(n).uniform(0.0, KILL_WITHIN))
    fleet.kill(victim)
    killed = time.monotonic()
    wait_until(lambda: (_owner_name(board, job.id) or victim) != victim, 120, POLL, "takeover")
    takeover = time.monotonic() - killed
    gate.touch()
    wait_until(lambda: board.get(job.id).state.finished, 60, 0.02, "held job finished")
    return takeover


def run(
    servers: Servers,
    backend: str,
    kills: int,
    *,
    lease: float | None,
    session_timeout: float,
    label: str | None = None,
) -> dict[str, Any]:
    """``kills`` rounds on one backend; returns the figure's fields."""
    options: dict[str, object] = {"lease": lease} if lease is not None else {}
    url = servers.url(backend, session_timeout=session_timeout, **options)
    board = jobboard.connect(url)
    fleet = Fleet(board, url, prefix="f")
    gates = Path(servers.tmp) / f"gates-{label or backend}"
    gates.mkdir(exist_ok=True)
    takeovers: list[float] = []
    try:
        fleet.start(FLEET_SIZE)
        for n in range(kills):
            wait_until(
                lambda: len(fleet.registered()) >= FLEET_SIZE,
                120,
                interval=0.05,
                what="replacement conductor registered",
            )
            takeovers.append(_round(board, fleet, gates / f"gate-{n}", n))
            fleet.spawn()
        complete = sum(1 for _ in board.iterjobs(states=["complete"]))
    finally:
        fleet.stop()
        board.close()
    if backend == "zookeeper" and lease is None:
        timeout = f"session {session_timeout:g} s"
    elif backend == "zookeeper":
        timeout = f"lease {lease:g} s, session {session_timeout:g} s"
    else:
        timeout = f"lease {lease:g} s"
    return {
        "backend": label or backend,
        "kills": kills,
        "timeout": timeout,
        "median_s": median(takeovers),
        "max_s": max(takeovers) if takeovers else float("nan"),
        "min_s": min(takeovers) if takeovers else float("nan"),
        "complete": complete,
    }
