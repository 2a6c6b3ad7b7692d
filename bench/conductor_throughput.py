"""Conductor throughput: jobs/s, board round trips and conductor CPU per job.

Starts N real conductor processes on a board, posts jobs of a three-task
no-op flow, and prints:

* jobs/s from the first post until every job is complete;
* conductor CPU per job (user+system of the conductor processes, idle
  baseline excluded);
* server commands per job (Redis only: ``INFO stats`` delta, posts excluded);
* post->claim latency p50/p99 with idle conductors (``claimed_at - created_at``,
  both board times).

    python bench/conductor_throughput.py --board redis://127.0.0.1:6390/0 --jobs 2000
    python bench/conductor_throughput.py --start-redis --jobs 2000
    python bench/conductor_throughput.py --board sqlite:///tmp/bench.db --jobs 500
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jobboard  # noqa: E402
from jobboard import JobState  # noqa: E402

FLOWS = "conductor.examples.noop_flows"


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_redis() -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


def redis_commands(url: str) -> tuple[int, int] | None:
    """(client round trips, all commands) executed by the server so far.

    Round trips are the commands clients send: script calls plus direct
    commands. Commands run inside scripts are counted in ``all`` only. The
    bench's own polling (HGETALL/EXISTS of one job) is excluded.
    """
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    try:
        stats = client.info("commandstats")
        total = int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()
    direct = ("evalsha", "eval", "evalsha_ro", "eval_ro", "ping", "subscribe")
    calls = sum(
        int(v["calls"]) for k, v in stats.items()
        if k.removeprefix("cmdstat_").split("|")[0] in direct
    )
    return calls, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board")
    parser.add_argument("--start-redis", action="store_true")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--conductors", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--lease", type=float, default=5.0)
    args = parser.parse_args()

    redis_proc = workdir = None
    if args.start_redis:
        redis_proc, base_url, workdir = start_redis()
    elif args.board:
        base_url = args.board
    else:
        parser.error("give --board URL or --start-redis")
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}namespace=bench-{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "conductor", "run", "--board", url, "--flows", FLOWS,
             "--name", f"bench-{n}", "--lease", str(args.lease), "--log-level", "WARNING"],
        )
        for n in range(args.conductors)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(board.iter_entities()) < args.conductors:
            if time.monotonic() > deadline:
                raise SystemExit("conductors did not register within 60s")
            time.sleep(0.1)
        time.sleep(0.5)

        # Post->claim latency with idle conductors.
        latencies = []
        for n in range(args.latency_samples):
            job = board.post(f"lat-{n}", "noop3")
            while True:
                got = board.get(job.id)
                if got.state is not JobState.WAITING:
                    break
                time.sleep(0.002)
            deadline = time.monotonic() + 10
            while not board.get(job.id).state.finished and time.monotonic() < deadline:
                time.sleep(0.002)
            claimed_at = got.claimed_at or got.updated_at
            latencies.append((claimed_at - got.created_at) * 1000)

        # Post the backlog while the conductors are frozen, then let them loose.
        for proc in procs:
            os.kill(proc.pid, signal.SIGSTOP)
        t_post = time.monotonic()
        ids = [board.post(f"job-{n}", "noop3").id for n in range(args.jobs)]
        post_rate = args.jobs / (time.monotonic() - t_post)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        cmd0 = redis_commands(base_url)
        t0 = time.monotonic()
        for proc in procs:
            os.kill(proc.pid, signal.SIGCONT)
        # Jobs are claimed in post order: the last one finishes (about) last.
        polls = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not board.get(ids[-1]).state.finished:
            polls += 1
            time.sleep(0.01)
        while time.monotonic() < deadline and board.job_count:
            polls += 1
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        cpu1 = sum(cpu_seconds(p.pid) for p in procs)
        cmd1 = redis_commands(base_url)
        states = {}
        for job_id in ids[:: max(1, len(ids) // 200)]:
            s = board.get(job_id).state.value
            states[s] = states.get(s, 0) + 1
        print(f"board: {base_url}  conductors: {args.conductors}  jobs: {args.jobs}")
        print(f"throughput: {args.jobs / elapsed:8.1f} jobs/s  ({elapsed:.2f}s; posts ran at {post_rate:.0f}/s)")
        print(f"conductor CPU per job: {(cpu1 - cpu0) / args.jobs * 1000:6.2f} ms")
        if cmd0 is not None and cmd1 is not None:
            calls = cmd1[0] - cmd0[0]
            total = cmd1[1] - cmd0[1]
            print(f"redis round trips per job: {calls / args.jobs:6.2f} "
                  f"(script calls and direct commands of the conductors; "
                  f"{total / args.jobs:.1f} server commands counting those inside scripts)")
        print(f"post->claim latency (idle): p50 {statistics.median(latencies):.2f} ms, "
              f"p99 {sorted(latencies)[int(len(latencies) * 0.99) - 1]:.2f} ms")
        print(f"sampled states: {states}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        board.close()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
