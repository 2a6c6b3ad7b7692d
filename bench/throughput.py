"""Throughput: N jobs of three no-op tasks posted at once to K idle conductor processes.

The conductors are started and registered, then frozen (SIGSTOP) while the
backlog is posted, then let loose (SIGCONT): the clock runs from SIGCONT until
the board holds no unfinished job, so the producer is not measured. Conductor
CPU is read from /proc; Redis commands from ``INFO commandstats`` (commands run
inside scripts included, the bench's own polling subtracted); ZooKeeper packets
from ``cons`` for the conductors' connections only.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import jobboard
from bench.common import packets_delta, zookeeper_connections
from bench.fleet import Fleet
from bench.servers import Servers, redis_command_total

#: ZooKeeper session timeout while the conductors are frozen for the posts (seconds).
FROZEN_SESSION_TIMEOUT = 30.0
#: How often the bench looks at the board while the conductors work (seconds).
POLL = 0.02


def _redis_poll_cost(board: jobboard.JobBoard, port: int, job_id: str) -> tuple[float, float]:
    """Server commands one ``get`` and one ``job_count`` of the bench cost (to subtract)."""
    before = redis_command_total(port)
    for _ in range(20):
        board.get(job_id)
    middle = redis_command_total(port)
    for _ in range(5):
        board.job_count  # noqa: B018 - the read is the point
    after = redis_command_total(port)
    return (middle - before) / 20, (after - middle) / 5


def run(servers: Servers, backend: str, conductors: int, jobs: int) -> dict[str, Any]:
    """One throughput measurement; returns the figure's fields."""
    url = servers.url(backend, session_timeout=FROZEN_SESSION_TIMEOUT)
    board = jobboard.connect(url)
    zk_port = servers.zookeeper.port if backend == "zookeeper" and servers.zookeeper else None
    redis_port = servers.redis.port if backend == "redis" and servers.redis else None
    own = set(zookeeper_connections(zk_port)) if zk_port else set()
    fleet = Fleet(board, url, prefix="t")
    try:
        fleet.start(conductors)
        time.sleep(0.5)
        fleet.signal_all(signal.SIGSTOP)
        posted = time.monotonic()
        ids = [board.post(f"job-{n}", "noop3").id for n in range(jobs)]
        post_rate = jobs / (time.monotonic() - posted)
        cpu0 = fleet.cpu()
        cmd0 = redis_command_total(redis_port) if redis_port else 0
        cons0 = zookeeper_connections(zk_port) if zk_port else {}
        started = time.monotonic()
        fleet.signal_all(signal.SIGCONT)
        polls = counts = 0
        deadline = started + max(600.0, jobs / 5)
        while not board.get(ids[-1]).state.finished:
            polls += 1
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{backend} K={conductors}: jobs not done after {deadline - started:.0f}s"
                )
            time.sleep(POLL)
        while board.job_count:
            counts += 1
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{backend} K={conductors}: jobs not done after {deadline - started:.0f}s"
                )
            time.sleep(POLL)
        elapsed = time.monotonic() - started
        cpu = fleet.cpu() - cpu0
        fields: dict[str, Any] = {
            "system": "conductor",
            "backend": backend,
            "k": conductors,
            "jobs": jobs,
            "seconds": elapsed,
            "jobs_per_s": jobs / elapsed,
            "cpu_ms_per_job": cpu / jobs * 1000,
            "post_rate": post_rate,
        }
        if redis_port:
            cmd = float(redis_command_total(redis_port) - cmd0)
            get_cost, count_cost = _redis_poll_cost(board, redis_port, ids[-1])
            cmd -= polls * get_cost + (counts + 1) * count_cost
            fields["redis_cmds_per_job"] = cmd / jobs
        if zk_port:
            packets = packets_delta(cons0, zookeeper_connections(zk_port), own)
            fields["zk_packets_per_job"] = packets / jobs
        sample = Counter(board.get(i).state.value for i in ids[:: max(1, jobs // 100)])
        fields["sampled_states"] = dict(sample)
        return fields
    finally:
        fleet.stop()
        board.close()
