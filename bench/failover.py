"""Failover: kill -9 the owner of a claimed job, time until another conductor claims it.

Each round posts one ``hold`` job (its task waits for a gate file), waits
until a conductor claims it, SIGKILLs that conductor at a random moment in
the following second, and polls the job every few milliseconds until a
surviving conductor owns it. Then the gate is opened so the job completes,
and a fresh conductor replaces the dead one: every round starts with the
same number of idle conductors.

On ZooKeeper without a lease the takeover is split in two with a watch on
the job's claim node: the server's part (kill -> the dead session's claim
node deleted, on the first tick after the session timeout) and the board's
(deletion -> the next claim node created by the surviving conductor).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from kazoo.protocol.states import EventType

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


class ClaimNodeWatch:
    """ZooKeeper: when a job's claim node is deleted, and when it is created again."""

    def __init__(self, board: Any, job_id: str) -> None:
        self.client = board.client
        self.path = f"{board.root}/claims/{job_id}"
        self.gone: float | None = None
        self.back: float | None = None
        self.done = threading.Event()
        self.client.exists(self.path, watch=self._event)

    def _event(self, event: Any) -> None:
        now = time.monotonic()
        if event.type == EventType.DELETED and self.gone is None:
            self.gone = now
            self.client.exists_async(self.path, watch=self._event).rawlink(self._present)
        elif event.type == EventType.CREATED and self.gone is not None:
            self.back = now
            self.done.set()

    def _present(self, result: Any) -> None:
        if result.get_nowait() is not None and self.back is None:  # created before our look
            self.back = time.monotonic()
            self.done.set()


def _round(
    board: jobboard.JobBoard, fleet: Fleet, gate: Path, n: int, split: bool
) -> tuple[float, float | None, float | None]:
    """One kill: seconds from SIGKILL of the owner to the claim by another conductor;
    with ``split``, also kill -> claim node deleted and deleted -> created again."""
    job = board.post(f"hold-{n}", "hold", {"gate": str(gate)})
    victim = wait_until(lambda: _owner_name(board, job.id), 60, POLL, "first claim")
    watch = ClaimNodeWatch(board, job.id) if split else None
    time.sleep(random.Random(n).uniform(0.0, KILL_WITHIN))
    fleet.kill(victim)
    killed = time.monotonic()
    wait_until(lambda: (_owner_name(board, job.id) or victim) != victim, 120, POLL, "takeover")
    takeover = time.monotonic() - killed
    expired = noticed = None
    if watch is not None and watch.done.wait(5) and watch.gone and watch.back:
        expired, noticed = watch.gone - killed, watch.back - watch.gone
    gate.touch()
    wait_until(lambda: board.get(job.id).state.finished, 60, 0.02, "held job finished")
    return takeover, expired, noticed


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
    expiries: list[float] = []
    notices: list[float] = []
    split = backend == "zookeeper" and lease is None
    try:
        fleet.start(FLEET_SIZE)
        for n in range(kills):
            wait_until(
                lambda: len(fleet.registered()) >= FLEET_SIZE,
                120,
                interval=0.05,
                what="replacement conductor registered",
            )
            takeover, expired, noticed = _round(board, fleet, gates / f"gate-{n}", n, split)
            takeovers.append(takeover)
            if expired is not None and noticed is not None:
                expiries.append(expired)
                notices.append(noticed)
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
    fields = {
        "backend": label or backend,
        "kills": kills,
        "timeout": timeout,
        "median_s": median(takeovers),
        "max_s": max(takeovers) if takeovers else float("nan"),
        "min_s": min(takeovers) if takeovers else float("nan"),
        "complete": complete,
    }
    if expiries:
        fields.update(
            {
                "tick_ms": servers.zk_tick_ms,
                "expiry_median_s": median(expiries),
                "expiry_max_s": max(expiries),
                "notice_median_ms": median(notices) * 1000,
                "notice_max_ms": max(notices) * 1000,
            }
        )
    return fields
