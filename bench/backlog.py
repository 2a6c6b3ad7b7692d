"""Claim cost and conductor start-up with 1k / 10k / 100k jobs waiting.

For each backlog size (topped up with ``noop3`` jobs, posted from a few
threads on the networked boards):

* claim cost: the bench's own ``claim_next`` timed over a number of claims
  (each claim then consumed), p50 and max (the first call may build a view);
* start-up: one ``conductor run`` process is spawned after a HIGH-priority
  marker job is posted; the figure is the time from spawn to its registration
  and to its claim of the marker, and its RSS half a second later (while it
  works through the backlog); median of three start-ups. A size of 0 gives the baseline (imports and
  connection) to subtract.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jobboard
from bench.common import median, rss_mb
from bench.fleet import Fleet
from bench.servers import Servers
from jobboard import JobState

#: Threads posting the backlog on Redis and ZooKeeper (SQLite posts from one).
POSTERS = 8
#: Claims timed per backlog size.
CLAIMS = 50
#: Conductor start-ups per backlog size (the median is reported).
STARTS = 3


def top_up(board: jobboard.JobBoard, backend: str, count: int, prefix: str) -> float:
    """Post ``count`` waiting jobs; returns posts per second."""
    started = time.monotonic()
    if count <= 0:
        return 0.0
    if backend == "sqlite":
        for n in range(count):
            board.post(f"{prefix}-{n}", "noop3")
    else:
        with ThreadPoolExecutor(POSTERS) as pool:
            list(pool.map(lambda n: board.post(f"{prefix}-{n}", "noop3"), range(count)))
    return count / (time.monotonic() - started)


def claim_cost(board: jobboard.JobBoard, claims: int) -> dict[str, float]:
    """Milliseconds per ``claim_next`` of the bench (each claim consumed at once)."""
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        claim = board.claim_next("bench-claimer", ["noop3"])
        times.append((time.perf_counter() - started) * 1000)
        if claim is None:
            break
        board.consume(claim.job_id, "bench-claimer", claim.token)
    return {"claim_p50_ms": median(times), "claim_max_ms": max(times)}


def start_up(board: jobboard.JobBoard, fleet: Fleet) -> dict[str, float]:
    """Spawn one conductor; seconds to registration and to its first claim, and its RSS."""
    marker = board.post("marker", "noop3", priority="HIGH")
    name = fleet.spawn()
    spawned = fleet.started_at[name]
    registered = claimed = None
    deadline = spawned + 180
    while claimed is None or registered is None:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError("conductor did not start within 180s")
        if registered is None and name in fleet.registered():
            registered = now - spawned
        if claimed is None and board.get(marker.id).state is not JobState.WAITING:
            claimed = now - spawned
        time.sleep(0.01)
    time.sleep(0.5)
    rss = rss_mb(fleet.pid_of(name))
    fleet.stop()
    return {"registered_s": registered, "first_claim_s": claimed, "rss_mb": rss}


def run(servers: Servers, backend: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Claim cost and start-up at each backlog size (plus the empty-board baseline)."""
    url = servers.url(backend, session_timeout=10.0)
    board = jobboard.connect(url)
    rows = []
    try:
        for size in [0, *sizes]:
            waiting = board.job_count if size else 0
            post_rate = top_up(board, backend, size - waiting, f"b{size}")
            row: dict[str, Any] = {"backend": backend, "waiting": size, "post_rate": post_rate}
            if size:
                row.update(claim_cost(board, CLAIMS))
                top_up(board, backend, CLAIMS, f"r{size}")
            starts = [
                start_up(board, Fleet(board, url, prefix=f"s{size}-{n}-")) for n in range(STARTS)
            ]
            row.update({key: median([s[key] for s in starts]) for key in starts[0]})
            rows.append(row)
    finally:
        board.close()
    return rows
