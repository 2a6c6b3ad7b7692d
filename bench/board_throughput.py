"""Board throughput: post N jobs, then let W workers run them as a conductor would.

Each worker loops claim_next / 3 x save_progress / consume until the board is
empty. Prints jobs per second; for Redis boards also the server-side commands
and the script calls (round trips) per job, from INFO deltas. Then measures
post -> claim latency with one idle worker blocked in ``wait()``.

Examples::

    python bench/board_throughput.py --spawn-redis --jobs 5000 --workers 4 --processes
    python bench/board_throughput.py --board redis://127.0.0.1:6390/0 --jobs 5000 --processes
    python bench/board_throughput.py --board memory://bench --jobs 5000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jobboard  # noqa: E402
from jobboard import unique_owner  # noqa: E402

ATOMS = ("fetch", "transform", "store")
FLOW = "bench"


def run_worker(url: str, namespace: str, ready: Any, start: Any, results: Any) -> None:
    """Claim and finish jobs until none is left; report (jobs done, end time)."""
    board = jobboard.connect(url, namespace=namespace)
    who = unique_owner("bench")
    ready.put(True)
    start.wait()
    done = 0
    while (claim := board.claim_next(who)) is not None:
        for n, atom in enumerate(ATOMS):
            record = {"state": "SUCCESS", "result": n, "execution": {"host": "bench"}}
            board.save_progress(claim, who, claim.token, atom, record)
        board.consume(claim, who, claim.token, result={"ok": True})
        done += 1
    results.put((done, time.monotonic()))
    board.close()


def run_waiter(url: str, namespace: str, count: int, ready: Any, results: Any) -> None:
    """Sit idle in wait(); claim each job as it comes; report post -> claim latencies."""
    board = jobboard.connect(url, namespace=namespace)
    who = unique_owner("waiter")
    latencies: list[float] = []
    ready.put(True)
    deadline = time.monotonic() + 60
    while len(latencies) < count and time.monotonic() < deadline:
        if not board.wait(timeout=5):
            continue
        while (claim := board.claim_next(who)) is not None:
            job = claim.job or board.get(claim.job_id)
            latencies.append(time.time() - job.store["t"])
            board.consume(claim, who, claim.token)
    results.put(latencies)
    board.close()


@contextmanager
def spawned_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


class ServerCounters:
    """INFO deltas of a Redis server (None for other boards)."""

    def __init__(self, url: str) -> None:
        self.client = None
        if url.startswith(("redis://", "rediss://")):
            import redis

            self.client = redis.Redis.from_url(url.split("?")[0])

    def snapshot(self) -> dict[str, int]:
        if self.client is None:
            return {}
        stats = {"total": self.client.info("stats")["total_commands_processed"]}
        for name, row in self.client.info("commandstats").items():
            stats[name.removeprefix("cmdstat_")] = row["calls"]
        return stats

    @staticmethod
    def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        # Two INFO calls of the snapshot itself are not the workload's.
        out = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        out["total"] = out.get("total", 0) - 2
        return out


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", help="board URL (redis://..., memory://...)")
    parser.add_argument("--spawn-redis", action="store_true", help="start a private redis-server")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--processes", action="store_true", help="workers are processes")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-gap", type=float, default=0.01, help="seconds between posts")
    args = parser.parse_args(argv)
    if bool(args.board) == args.spawn_redis:
        parser.error("give exactly one of --board URL and --spawn-redis")
    if args.spawn_redis:
        with spawned_redis() as url:
            return bench(url, args)
    return bench(args.board, args)


def bench(url: str, args: argparse.Namespace) -> int:
    processes = args.processes and not url.startswith("memory://")
    if args.processes and not processes:
        print("note: memory:// boards live in one process; using threads")
    ctx = multiprocessing.get_context("spawn")
    spawn: Any = ctx.Process if processes else threading.Thread
    make_queue: Any = ctx.Queue if processes else queue.Queue
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(url, namespace=namespace)
    server = ServerCounters(url)
    print(f"board: {board!r}, {args.workers} {'processes' if processes else 'threads'}")

    t0 = time.monotonic()
    for n in range(args.jobs):
        board.post(f"job-{n}", FLOW, {"n": n, "payload": "x" * 64})
    posting = time.monotonic() - t0
    print(f"posted {args.jobs} jobs in {posting:.2f}s ({args.jobs / posting:.0f} posts/s)")

    ready, results = make_queue(), make_queue()
    start = ctx.Event() if processes else threading.Event()
    workers = [
        spawn(target=run_worker, args=(url, namespace, ready, start, results))
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    before = server.snapshot()
    t0 = time.monotonic()
    start.set()
    reports = [results.get(timeout=600) for _ in workers]
    elapsed = max(end for _, end in reports) - t0
    after = server.snapshot()
    for worker in workers:
        worker.join(30)
    done = sum(n for n, _ in reports)
    print(
        f"worked {done} jobs (claim_next + {len(ATOMS)} save_progress + consume) "
        f"in {elapsed:.2f}s: {done / elapsed:.0f} jobs/s"
    )
    if before and done:
        delta = ServerCounters.delta(before, after)
        scripts = delta.get("evalsha", 0) + delta.get("eval", 0)
        print(
            f"server: {delta['total'] / done:.1f} commands per job (including those run inside "
            f"scripts), {scripts / done:.2f} script calls per job, "
            f"{(delta['total'] - delta.get('publish', 0)) / done:.1f} without PUBLISH"
        )

    ready, results = make_queue(), make_queue()
    waiter = spawn(target=run_waiter, args=(url, namespace, args.latency_jobs, ready, results))
    waiter.start()
    ready.get(timeout=60)
    time.sleep(0.2)  # let the waiter block in wait() before the first post
    for n in range(args.latency_jobs):
        board.post(f"latency-{n}", FLOW, {"t": time.time()})
        time.sleep(args.latency_gap)
    latencies = results.get(timeout=120)
    waiter.join(30)
    if latencies:
        print(
            f"post->claim latency, idle worker woken by wait() ({len(latencies)} jobs): "
            f"p50 {percentile(latencies, 50) * 1000:.2f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.2f} ms, "
            f"mean {statistics.fmean(latencies) * 1000:.2f} ms"
        )
    board.purge()
    if server.client is not None:
        server.client.delete(f"jb:{{{namespace}}}:counters", f"jb:{{{namespace}}}:seq")
    board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
