"""Low load: idle cost, post->claim latency at a real arrival rate, and the thundering herd.

For each K, K conductors are started and left idle, then jobs are posted at a
steady rate (5 jobs/s by default) while the bench reads:

* conductor CPU per job (from /proc, idle time between posts included);
* client round trips per job: on Redis, requests of the conductors'
  connections seen by ``MONITOR`` (a pipeline counts once; client commands and
  commands run inside scripts are counted too), on ZooKeeper, packets received
  from the conductors' sessions (``cons``);
* post->claim latency of every job: ``claimed_at - created_at``, both in
  board time.

With K = 1 an idle window comes first: CPU % of one idle conductor and its
round trips per second.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import jobboard
from bench.common import (
    packets_delta,
    percentile,
    wait_until,
    zookeeper_connections,
)
from bench.fleet import Fleet
from bench.servers import RedisMonitor, Servers, redis_clients

#: Session timeout of the ZooKeeper boards here (seconds).
SESSION_TIMEOUT = 10.0


class Tap:
    """Round trips of the conductors (not the bench) on one server between two readings."""

    def __init__(self, servers: Servers, backend: str) -> None:
        self.zk_port = (
            servers.zookeeper.port if backend == "zookeeper" and servers.zookeeper else None
        )
        self.redis_port = servers.redis.port if backend == "redis" and servers.redis else None
        self.own: set[str] = set()
        self.monitor: RedisMonitor | None = None
        self._before: Any = None

    def remember_own(self) -> None:
        """Call before the conductors start: the connections open now are the bench's."""
        if self.zk_port:
            self.own = set(zookeeper_connections(self.zk_port))
        if self.redis_port:
            self.own = redis_clients(self.redis_port)

    @contextlib.contextmanager
    def window(self) -> Any:
        """Count while the block runs; yields a dict filled in on exit."""
        result: dict[str, float] = {}
        if self.redis_port:
            with RedisMonitor(self.redis_port) as monitor:
                yield result
                time.sleep(0.05)  # let the last lines arrive
                clients, trips, scripts = monitor.snapshot()
            result["round_trips"] = sum(n for a, n in trips.items() if a not in self.own)
            result["commands"] = sum(n for a, n in clients.items() if a not in self.own)
            result["in_scripts"] = scripts
        elif self.zk_port:
            before = zookeeper_connections(self.zk_port)
            yield result
            after = zookeeper_connections(self.zk_port)
            result["round_trips"] = packets_delta(before, after, self.own)
        else:
            yield result


def idle(fleet: Fleet, tap: Tap, seconds: float) -> dict[str, Any]:
    """CPU % and round trips per second of the (idle) fleet over ``seconds``."""
    cpu0 = fleet.cpu()
    started = time.monotonic()
    with tap.window() as counts:
        time.sleep(seconds)
    elapsed = time.monotonic() - started
    fields: dict[str, Any] = {
        "conductors": len(fleet.pids),
        "seconds": elapsed,
        "cpu_pct": (fleet.cpu() - cpu0) / elapsed * 100,
    }
    if "round_trips" in counts:
        fields["round_trips_per_s"] = counts["round_trips"] / elapsed
    if "commands" in counts:
        fields["redis_client_cmds_per_s"] = counts["commands"] / elapsed
        fields["redis_cmds_in_scripts_per_s"] = counts["in_scripts"] / elapsed
    return fields


def steady_posts(
    board: jobboard.JobBoard, fleet: Fleet, tap: Tap, jobs: int, rate: float
) -> dict[str, Any]:
    """Post ``jobs`` jobs at ``rate`` per second to the idle fleet; returns per-job costs."""
    ids = []
    cpu0 = fleet.cpu()
    with tap.window() as counts:
        start = time.monotonic()
        for n in range(jobs):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ids.append(board.post(f"low-{n}", "noop3").id)
        wait_until(lambda: board.get(ids[-1]).state.finished, 60, 0.05, "last job finished")
        wait_until(lambda: board.job_count == 0, 60, 0.05, "every job finished")
    cpu = fleet.cpu() - cpu0
    jobs_seen = [board.get(i) for i in ids]
    latencies = [((j.claimed_at or j.updated_at) - j.created_at) * 1000 for j in jobs_seen]
    fields: dict[str, Any] = {
        "jobs": jobs,
        "rate": rate,
        "cpu_ms_per_job": cpu / jobs * 1000,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "states": dict(Counter(j.state.value for j in jobs_seen)),
    }
    if "round_trips" in counts:
        fields["round_trips_per_job"] = counts["round_trips"] / jobs
    if "commands" in counts:
        fields["redis_client_cmds_per_job"] = counts["commands"] / jobs
        fields["redis_cmds_in_scripts_per_job"] = counts["in_scripts"] / jobs
    return fields


def run(
    servers: Servers,
    backend: str,
    conductors: int,
    jobs: int,
    *,
    rate: float,
    idle_seconds: float = 0.0,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(idle figure or None, low-load figure) with ``conductors`` idle conductors."""
    url = servers.url(backend, session_timeout=SESSION_TIMEOUT)
    board = jobboard.connect(url)
    tap = Tap(servers, backend)
    board.job_count  # noqa: B018 - opens the bench's connection before the snapshot
    tap.remember_own()
    fleet = Fleet(board, url, prefix="h")
    try:
        fleet.start(conductors)
        time.sleep(1.0)
        idle_fields = None
        if idle_seconds > 0:
            idle_fields = {"backend": backend, **idle(fleet, tap, idle_seconds)}
        low = steady_posts(board, fleet, tap, jobs, rate)
        return idle_fields, {"backend": backend, "k": conductors, **low}
    finally:
        fleet.stop()
        board.close()
