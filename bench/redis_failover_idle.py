"""Redis board: failover after ``kill -9`` of an owner, and what an idle conductor costs.

Figures, not tests. On a private redis-server it starts:

* **failover**: two ``conductor run`` processes with a short lease; a job whose
  first task blocks; the owner is killed with SIGKILL; the time from the kill to
  the other conductor's claim (seen as the board's ``claimed`` event) is
  printed per run, with the median and max;
* **idle**: one ``conductor run`` process and nothing to do; the server's
  command counts (``INFO commandstats``) over a window give the commands per
  second the idle conductor sends (the reader's own INFO calls left out).

    .venv/bin/python bench/redis_failover_idle.py --runs 5 --lease 1 --idle-seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

import jobboard
from jobboard import BoardEvent
from tests.helpers import stop_processes
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def start_conductor(url: str, name: str, lease: float, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CONDUCTOR_TEST_LOG=str(log), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "conductor", "run", "--board", url, "--flows",
         "tests.flows_for_tests", "--name", name, "--lease", str(lease),
         "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=open(str(log) + f".{name}.out", "ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError("condition not met")


def failover_once(server: RedisServer, lease: float, workdir: Path) -> tuple[float, float]:
    """Seconds from kill -9 of the owner to the other conductor's claim, and from
    the end of the dead owner's lease to that claim (server clock)."""
    ns = f"f{uuid.uuid4().hex[:10]}"
    url = f"{server.url}?namespace={ns}&lease={lease}&persistence=ignore"
    log = workdir / f"{ns}.jsonl"
    log.touch()
    board = jobboard.connect(url)
    claims: list[tuple[float, str]] = []
    seen = threading.Event()

    def on_event(event: BoardEvent) -> None:
        if event.kind == "claimed":
            claims.append((time.monotonic(), str(event.data.get("owner"))))
            seen.set()

    board.add_listener(on_event)
    procs = {n: start_conductor(url, n, lease, log) for n in ("a", "b")}
    try:
        wait_for(lambda: len(board.iter_entities()) == 2, 30)
        time.sleep(2 * lease)  # both idle in wait()
        gate = workdir / f"{ns}.gate"
        spec = {"block_at": "one", "gate": str(gate), "block_limit": 60}
        job = board.post("j", "steps", {"spec": spec})
        wait_for(lambda: claims, 10)
        first_owner = claims[0][1]
        victim = first_owner.split("@")[0]
        wait_for(lambda: log.read_text().count('"start"'), 10)
        killed = time.monotonic()
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        lease_end = board.get(job).lease_expires_at or 0.0  # no renewal after the kill
        taken = wait_for(lambda: [t for t, who in claims if who != first_owner], 10 + 2 * lease)
        late = (board.get(job).claimed_at or 0.0) - lease_end
        gate.touch()
        return taken[0] - killed, late
    finally:
        stop_processes(procs.values())
        board.close()


def idle_commands(
    server: RedisServer, lease: float, seconds: float, workdir: Path
) -> dict[str, Any]:
    """Commands per second (by command) that one idle conductor sends."""
    ns = f"i{uuid.uuid4().hex[:10]}"
    url = f"{server.url}?namespace={ns}&lease={lease}&persistence=ignore"
    log = workdir / f"{ns}.jsonl"
    proc = start_conductor(url, "idle", lease, log)
    reader = redis.Redis(port=server.port)
    try:
        wait_for(lambda: reader.exists(f"jb:{{{ns}}}:entities:conductor"), 30)
        time.sleep(3.0)  # settled
        reader.config_resetstat()
        time.sleep(seconds)
        stats = reader.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        calls.pop("config|resetstat", None)  # this reader's own requests
        calls["info"] = calls.get("info", 1) - 1
        clients = [c for c in reader.client_list() if c.get("name") != "reader"]
        return {
            "seconds": seconds,
            "commands_per_s": round(sum(calls.values()) / seconds, 2),
            "by_command_per_s": {k: round(v / seconds, 2) for k, v in sorted(calls.items())},
            "connections": len(clients) - 1,
        }
    finally:
        stop_processes([proc])
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(os.environ.get("BENCH_WORKDIR") or tmp)
            runs = [failover_once(server, args.lease, workdir) for _ in range(args.runs)]
            times, lates = [t for t, _ in runs], [late for _, late in runs]
            print(
                f"failover after kill -9 (lease {args.lease:g}s, {args.runs} runs): "
                + ", ".join(f"{t:.2f}" for t in times)
                + f" s; median {statistics.median(times):.2f} s, max {max(times):.2f} s; "
                f"claimed after the lease ended by: "
                + ", ".join(f"{late * 1000:.0f}" for late in lates)
                + " ms"
            )
            print(
                json.dumps(
                    {
                        "figure": "redis_failover_s",
                        "lease": args.lease,
                        "runs": times,
                        "after_lease_end": lates,
                    }
                )
            )
            idle = idle_commands(server, args.lease, args.idle_seconds, workdir)
            print(
                f"idle conductor: {idle['commands_per_s']} commands/s over {args.idle_seconds:g} s "
                f"(including those inside scripts): {idle['by_command_per_s']}"
            )
            print(json.dumps({"figure": "redis_idle_commands_per_s", **idle}))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
