"""ZooKeeper board figures: throughput, CPU and transactions per job, the herd, start-up.

Runs real ``conductor run`` processes against a private ZooKeeper started on a
free loopback port (the test helper's server, ``mntr`` answered). Figures, not
tests: it prints one JSON line per measurement.

* ``throughput``: N jobs of three no-op tasks posted while K conductors are
  frozen (SIGSTOP), then timed from SIGCONT until the board is empty;
  conductor CPU per job from /proc, ZooKeeper transactions per job (zxid
  delta, posts excluded) and packets per job (``mntr``, the bench's own
  polling included, so read it as an upper bound).
* ``herd``: K idle conductors, jobs posted at a steady rate (5/s by default);
  conductor CPU and ZooKeeper packets per job, post->claim latency.
* ``startup``: a conductor started with B waiting jobs: seconds from spawn to
  its claim of a high-priority marker job, and its RSS then.

    PYTHONPATH=$PWD python bench/zk_perf.py throughput --k 1,4 --jobs 2000
    PYTHONPATH=$PWD python bench/zk_perf.py herd --k 1,4,16 --jobs 40
    PYTHONPATH=$PWD python bench/zk_perf.py startup --backlog 100000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jobboard  # noqa: E402
from jobboard import JobPriority  # noqa: E402
from tests.servers import ZooKeeperServer, four_letter_word  # noqa: E402

FLOWS = "conductor.examples.noop_flows"


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's live threads (schedstat, nanosecond resolution)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
    except OSError:
        pass
    return total / 1e9


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(step)


def mntr(port: int) -> dict[str, int]:
    """Numeric ``mntr`` values of the server."""
    out = {}
    for line in four_letter_word(port, "mntr").splitlines():
        key, _, value = line.partition("\t")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


def zxid(port: int) -> int:
    for line in four_letter_word(port, "srvr").splitlines():
        if line.startswith("Zxid:"):
            return int(line.split()[1], 16) & 0xFFFFFFFF
    raise RuntimeError("no zxid in srvr")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


def emit(figure: str, **fields: Any) -> None:
    print(json.dumps({"figure": figure, **fields}, default=round), flush=True)


class Fleet:
    """``conductor run`` processes on one board URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable, "-m", "conductor", "run", "--board", self.url, "--flows", FLOWS,
            "--name", name, "--log-level", "ERROR", "--drain-timeout", "5",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start(self, board: jobboard.JobBoard, count: int, prefix: str) -> None:
        names = {f"{prefix}{n}" for n in range(count)}
        for name in sorted(names):
            self.spawn(name)

        def registered() -> bool:
            return names <= {e.name.split("@", 1)[0] for e in board.iter_entities()}

        wait_until(registered, 120, f"{count} conductors registered", 0.1)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def signal(self, signum: int) -> None:
        for pid in self.pids:
            os.kill(pid, signum)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def server() -> Iterator[ZooKeeperServer]:
    zk = ZooKeeperServer(tick_time=500, max_session_timeout=60_000)
    write_config = zk.write_config

    def with_mntr() -> Any:
        config = write_config()
        text = config.read_text()
        if "mntr" not in text:
            config.write_text(text.replace("whitelist=", "whitelist=mntr,"))
        return config

    zk.write_config = with_mntr  # type: ignore[method-assign]
    zk.command = lambda orig=zk.command: [  # type: ignore[method-assign]
        "-Xmx1g" if a.startswith("-Xmx") else a for a in orig()
    ]
    zk.start(timeout=60)
    try:
        yield zk
    finally:
        zk.stop()
        zk.cleanup()


def url_of(zk: ZooKeeperServer, session_timeout: float) -> str:
    ns = f"perf-{uuid.uuid4().hex[:10]}"
    return f"zookeeper://{zk.hosts}/perf?namespace={ns}&session_timeout={session_timeout}"


def throughput(zk: ZooKeeperServer, k: int, jobs: int) -> None:
    url = url_of(zk, 30.0)
    board = jobboard.connect(url)
    fleet = Fleet(url)
    try:
        fleet.start(board, k, "t")
        time.sleep(0.5)
        fleet.signal(signal.SIGSTOP)
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: board.post(f"job-{n}", "noop3").id, range(jobs)))
        last = max(ids, key=lambda i: int(i.rsplit("+", 1)[1]))
        server_pid = zk.proc.pid if zk.proc is not None else 0
        cpu0, z0, m0 = fleet.cpu(), zxid(zk.port), mntr(zk.port)
        server0, own0, busy0 = cpu_seconds(server_pid), cpu_seconds(os.getpid()), machine_busy()
        started = time.monotonic()
        fleet.signal(signal.SIGCONT)
        # the bench board's own view (kept by watches) says when the board is empty:
        # no request per poll, so the bench does not load the server it measures
        wait_until(lambda: board.job_count == 0, 600, "board empty", 0.005)
        elapsed = time.monotonic() - started
        if not board.get(last).state.finished:
            raise RuntimeError(f"board empty but {last} not finished")
        cpu, z1, m1 = fleet.cpu() - cpu0, zxid(zk.port), mntr(zk.port)
        server, own = cpu_seconds(server_pid) - server0, cpu_seconds(os.getpid()) - own0
        busy1 = machine_busy()
        fsyncs = m1.get("zk_cnt_fsynctime", 0) - m0.get("zk_cnt_fsynctime", 0)
        fsync_ms = m1.get("zk_sum_fsynctime", 0) - m0.get("zk_sum_fsynctime", 0)
        emit(
            "throughput",
            k=k,
            jobs=jobs,
            seconds=round(elapsed, 2),
            jobs_per_s=round(jobs / elapsed, 1),
            cpu_ms_per_job=round(cpu / jobs * 1000, 2),
            txns_per_job=round((z1 - z0) / jobs, 2),
            packets_per_job=round(
                (m1["zk_packets_received"] - m0["zk_packets_received"]) / jobs, 1
            ),
            # where the wall time goes: the server's CPU, its fsyncs (count, and
            # milliseconds spent in them), the bench's own CPU, the machine's
            server_cpu_ms_per_job=round(server / jobs * 1000, 2),
            fsyncs_per_job=round(fsyncs / jobs, 2),
            fsync_ms_per_job=round(fsync_ms / jobs, 2),
            bench_cpu_ms_per_job=round(own / jobs * 1000, 2),
            machine_busy_pct=round(
                100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9), 1
            ),
        )
    finally:
        fleet.stop()
        board.close()


def herd(zk: ZooKeeperServer, k: int, jobs: int, rate: float) -> None:
    url = url_of(zk, 10.0)
    board = jobboard.connect(url)
    fleet = Fleet(url)
    try:
        fleet.start(board, k, "h")
        time.sleep(1.0)
        cpu0, m0 = fleet.cpu(), mntr(zk.port)
        ids = []
        start = time.monotonic()
        for n in range(jobs):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ids.append(board.post(f"low-{n}", "noop3").id)
        wait_until(lambda: board.job_count == 0, 60, "every job finished", 0.05)
        cpu, m1 = fleet.cpu() - cpu0, mntr(zk.port)
        seen = [board.get(i) for i in ids]
        lat = sorted(((j.claimed_at or j.updated_at) - j.created_at) * 1000 for j in seen)
        emit(
            "herd",
            k=k,
            jobs=jobs,
            rate=rate,
            cpu_ms_per_job=round(cpu / jobs * 1000, 2),
            packets_in_per_job=round(
                (m1["zk_packets_received"] - m0["zk_packets_received"]) / jobs, 1
            ),
            packets_out_per_job=round((m1["zk_packets_sent"] - m0["zk_packets_sent"]) / jobs, 1),
            p50_ms=round(lat[len(lat) // 2], 1),
            max_ms=round(lat[-1], 1),
            complete=sum(j.state.value == "complete" for j in seen),
        )
    finally:
        fleet.stop()
        board.close()


def idle(zk: ZooKeeperServer, k: int, seconds: float) -> None:
    url = url_of(zk, 10.0)
    board = jobboard.connect(url)
    fleet = Fleet(url)
    try:
        fleet.start(board, k, "i")
        time.sleep(1.0)
        cpu0, m0 = fleet.cpu(), mntr(zk.port)
        time.sleep(seconds)
        cpu, m1 = fleet.cpu() - cpu0, mntr(zk.port)
        emit(
            "idle",
            k=k,
            seconds=seconds,
            cpu_ms_per_s_each=round(cpu / seconds / k * 1000, 2),
            packets_in_per_s_each=round(
                (m1["zk_packets_received"] - m0["zk_packets_received"]) / seconds / k, 2
            ),
        )
    finally:
        fleet.stop()
        board.close()


def fill(board: Any, count: int) -> None:
    """Create ``count`` waiting jobs fast: the nodes ``post`` makes, pipelined."""
    client, folder = board.client, f"{board.root}/jobs"
    for start in range(0, count, 2000):
        pending = []
        for n in range(start, min(count, start + 2000)):
            record = {
                "name": f"b-{n}", "flow": "noop3", "priority": "NORMAL", "max_attempts": 3,
                "created_at": time.time(), "store": {}, "details": {},
            }  # fmt: skip
            data = json.dumps(record, separators=(",", ":")).encode()
            pending.append(client.create_async(f"{folder}/p2+noop3+", data, sequence=True))
        for result in pending:
            result.get(timeout=30)


def startup(zk: ZooKeeperServer, backlog: int, starts: int) -> None:
    url = url_of(zk, 10.0)
    board = jobboard.connect(url)
    fill(board, backlog)
    times, rss = [], []
    for n in range(starts):
        marker = board.post(f"marker-{n}", "noop3", priority=JobPriority.HIGH).id
        fleet = Fleet(url)
        spawned = time.monotonic()
        proc = fleet.spawn(f"s{n}")
        wait_until(lambda m=marker: board.get(m).state.value != "waiting", 120, "marker", 0.005)
        times.append(time.monotonic() - spawned)
        rss.append(rss_mb(proc.pid))
        fleet.signal(signal.SIGSTOP)  # keep the backlog for the next start
        fleet.stop()
    emit(
        "startup",
        backlog=backlog,
        waiting=board.job_count,
        spawn_to_claim_s=round(statistics.median(times), 3),
        rss_mb=round(statistics.median(rss), 1),
    )
    board.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("throughput", "herd", "idle", "startup"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--k", default="1,4")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--backlog", default="0,100000")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with server() as zk:
        if args.what == "startup":
            for size in args.backlog.split(","):
                startup(zk, int(size), args.starts)
            return
        for _ in range(args.repeat):
            for k in map(int, args.k.split(",")):
                if args.what == "throughput":
                    throughput(zk, k, args.jobs)
                elif args.what == "idle":
                    idle(zk, k, args.seconds)
                else:
                    herd(zk, k, args.jobs, args.rate)


if __name__ == "__main__":
    main()
