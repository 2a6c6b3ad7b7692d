"""Peer failover: kill -9 the TaskFlow conductor that owns a job, time the takeover.

Runs in the peer's virtual environment, like ``peer_driver.py`` (whose board
and conductor set-up it reuses). ZooKeeper board only: TaskFlow's blocking
conductor claims Redis jobs without an expiry, so a killed owner's Redis claim
never ends by itself. Each round posts a ``hold`` job (it waits for a gate
file), SIGKILLs the conductor that claimed it (at a random moment within a
second) and polls ``find_owner`` every
few milliseconds until another conductor owns it. Prints one JSON line.

    peer_failover.py --port 2190 --kills 20 --session-timeout 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import peer_driver  # noqa: E402

#: Conductors alive at the start of each round.
FLEET_SIZE = 2
POLL = 0.005
#: The owner is killed at a random moment (seeded per round) within this many seconds
#: of its claim, as in the project's failover figure.
KILL_WITHIN = 1.0


class PeerFleet:
    """TaskFlow conductor processes (``peer_driver.py conductor``) by name."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.count = 0

    def spawn(self) -> None:
        name = f"peer{self.count}"
        self.count += 1
        args = self.args
        cmd = [
            sys.executable, os.path.join(HERE, "peer_driver.py"), "conductor",
            "--backend", "zookeeper", "--port", str(args.port), "--namespace", args.namespace,
            "--workdir", args.workdir, "--claim-listener", "off",
            "--session-timeout", str(args.session_timeout), "--name", name,
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, env=dict(os.environ, PYTHONPATH=HERE), stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("peer conductor did not start")
        self.procs[name] = proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def post_hold(board: Any, persistence: Any, conn: Any, name: str, gate: str) -> Any:
    """Post one ``hold`` job the documented way; returns TaskFlow's job."""
    import peer_flows
    from taskflow import engines
    from taskflow.persistence import models

    book = models.LogBook(name)
    detail = models.FlowDetail(name, str(uuid.uuid4()))
    book.add(detail)
    conn.save_logbook(book)
    engines.save_factory_details(detail, peer_flows.hold, [], {}, backend=persistence)
    return board.post(name, book=book, details={"store": {"gate": gate}})


def one_round(
    board: Any, persistence: Any, conn: Any, fleet: PeerFleet, gate: str, n: int
) -> float:
    """Seconds from SIGKILL of the owner to the claim by another conductor."""
    job = post_hold(board, persistence, conn, f"hold-{n}", gate)
    victim = common.wait_until(lambda: board.find_owner(job), 60, POLL, "claim")
    time.sleep(random.Random(n).uniform(0.0, KILL_WITHIN))
    fleet.kill(victim)
    killed = time.monotonic()
    common.wait_until(lambda: (board.find_owner(job) or victim) != victim, 120, POLL, "takeover")
    takeover = time.monotonic() - killed
    open(gate, "w").close()
    common.wait_until(lambda: board.job_count == 0, 60, 0.02, "job consumed")
    return takeover


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.backend = "zookeeper"
    args.namespace = f"peerfo-{uuid.uuid4().hex[:8]}"
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="peer-failover-")
    board, persistence = peer_driver.open_backends(args)
    fleet = PeerFleet(args)
    takeovers = []
    try:
        for _ in range(FLEET_SIZE):
            fleet.spawn()
        with contextlib.closing(persistence.get_connection()) as conn:
            for n in range(args.kills):
                gate = os.path.join(args.workdir, f"{args.namespace}-gate-{n}")
                takeovers.append(one_round(board, persistence, conn, fleet, gate, n))
                fleet.spawn()
    finally:
        fleet.stop()
        board.close()
        persistence.close()
    fields = {
        "backend": "zookeeper",
        "system": "taskflow",
        "kills": args.kills,
        "timeout": f"session {args.session_timeout:g} s",
        "median_s": common.median(takeovers),
        "max_s": max(takeovers),
        "min_s": min(takeovers),
    }
    print(json.dumps(common.rounded(fields)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
