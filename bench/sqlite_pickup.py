"""SQLite pick-up at a real arrival rate: post->claim latency and idle conductor CPU.

Starts K real ``conductor run`` processes on a fresh SQLite board file, lets
them idle, then posts jobs of a three-task no-op flow at a steady rate (5
jobs/s by default, spaced evenly) and prints, per K:

* post->claim latency p50/p99/max: ``claimed_at - created_at`` of every job
  (both board times, ``time.time()`` of this one host);
* idle CPU: user+system CPU of each conductor while nothing is posted, as a
  percentage of one core (the mean over the conductors).

One JSON line per K, then a small table::

    python bench/sqlite_pickup.py                    # K = 1 and 4, 20 s at 5 jobs/s
    python bench/sqlite_pickup.py --conductors 1 --seconds 10 --rate 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import cpu_seconds  # noqa: E402

import jobboard  # noqa: E402
from jobboard import JobState  # noqa: E402

FLOWS = "conductor.examples.noop_flows"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(conductors: int, seconds: float, rate: float, idle: float) -> dict[str, float | int]:
    """One run: K idle conductors, ``idle`` seconds of idle CPU, then steady posts."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-sqlite-pickup-"))
    url = f"sqlite://{workdir / 'board.db'}"
    board = jobboard.connect(url)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "conductor", "run", "--board", url, "--flows", FLOWS,
             "--name", f"pickup-{n}", "--log-level", "WARNING"],
            env=env,
        )
        for n in range(conductors)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(board.iter_entities()) < conductors:
            if time.monotonic() > deadline:
                raise SystemExit("conductors did not register within 60s")
            time.sleep(0.1)
        time.sleep(1.0)  # let start-up settle before the idle window
        before = [cpu_seconds(p.pid) for p in procs]
        started = time.monotonic()
        time.sleep(idle)
        spent = [cpu_seconds(p.pid) - b for p, b in zip(procs, before, strict=True)]
        idle_cpu = 100.0 * statistics.mean(spent) / (time.monotonic() - started)

        count = max(1, int(seconds * rate))
        ids = []
        first = time.monotonic()
        for n in range(count):
            due = first + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ids.append(board.post(f"job-{n}", "noop3").id)
        deadline = time.monotonic() + 60
        while True:
            jobs = [board.get(i) for i in ids]
            if all(j.state is JobState.COMPLETE for j in jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        latencies = [
            (j.claimed_at - j.created_at) * 1000 for j in jobs if j.claimed_at is not None
        ]
        if not latencies:  # claimed_at is cleared at the end: read it from the finished record
            latencies = [(j.updated_at - j.created_at) * 1000 for j in jobs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        board.close()
    return {
        "conductors": conductors,
        "jobs": len(latencies),
        "rate": rate,
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "worst_ms": sorted((round(x, 1) for x in latencies), reverse=True)[:5],
        "idle_cpu_pct": round(idle_cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conductors", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=20.0, help="posting time per run")
    parser.add_argument("--rate", type=float, default=5.0, help="jobs posted per second")
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU window, seconds")
    args = parser.parse_args()
    rows = []
    for k in args.conductors:
        row = measure(k, args.seconds, args.rate, args.idle)
        print(json.dumps({"figure": "sqlite_pickup", **row}), flush=True)
        rows.append(row)
    print(f"{'K':>3} {'jobs':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'idle CPU %':>11}")
    for r in rows:
        print(
            f"{r['conductors']:>3} {r['jobs']:>5} {r['p50_ms']:>8} {r['p90_ms']:>8} "
            f"{r['p99_ms']:>8} {r['max_ms']:>8} {r['idle_cpu_pct']:>11}"
        )


if __name__ == "__main__":
    main()
