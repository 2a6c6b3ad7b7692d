"""``conductor demo``: several conductor processes share a board; one is killed.

The demo posts a few dozen jobs of the example ``order`` flow, starts the
conductors as real processes, SIGKILLs one while it holds a claim with some
tasks done, and shows another conductor resuming that job without re-running
its finished tasks. It ends with a summary table and exits 0 when every job
completed and no finished task ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jobboard
from jobboard import JobState

FLOWS_MODULE = "conductor.examples.demo_flows"
TASKS = ("validate", "charge", "ship")


def _spawn(board_url: str, name: str, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["CONDUCTOR_DEMO_LOG"] = str(log)
    env["CONDUCTOR_DEMO_TASK_SECONDS"] = str(args.task_seconds)
    cmd = [
        sys.executable, "-m", "conductor", "run", "--board", board_url, "--flows", FLOWS_MODULE,
        "--name", name, "--lease", str(args.lease), "--log-level", "WARNING",
        "--drain-timeout", "10",
    ]
    return subprocess.Popen(cmd, env=env)


def _pid_of(owner: str) -> int | None:
    """Owners look like ``name@host:pid:random``."""
    try:
        return int(owner.rsplit(":", 2)[-2])
    except (ValueError, IndexError):
        return None


def _wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="conductor-demo-"))
    board_url = args.board or f"sqlite:///{workdir / 'board.db'}"
    log = workdir / "executions.jsonl"
    log.touch()
    print(f"board: {board_url}")
    board = jobboard.connect(board_url)
    if args.board:  # a shared server: keep the demo's jobs apart
        board.close()
        namespace = f"demo-{os.getpid()}-{int(time.time())}"
        board_url = _with_namespace(board_url, namespace)
        board = jobboard.connect(board_url)
    jobs = [
        board.post(f"order-{n}", "order", {"order_id": n, "amount": 10.0 + n})
        for n in range(args.jobs)
    ]
    print(f"posted {len(jobs)} jobs of flow 'order' (validate -> charge -> ship)")

    names = [f"conductor-{n + 1}" for n in range(args.conductors)]
    procs = {name: _spawn(board_url, name, args, log) for name in names}
    print(f"started {len(procs)} conductor processes: {', '.join(names)}")
    job_ids = {j.id for j in jobs}
    victim: dict[str, Any] = {}
    code = 0
    try:
        # Given a conductor holding a claim with at least one finished task...
        def claimed_midway() -> dict[str, Any] | None:
            for job in board.iterjobs(ensure_fresh=True, states=[JobState.CLAIMED]):
                if job.id not in job_ids or not job.owner:
                    continue
                done = [n for n, r in board.load_progress(job.id).items()
                        if r.get("state") == "SUCCESS"]
                if 0 < len(done) < len(TASKS):
                    return {"job": job, "done": sorted(done)}
            return None

        found = _wait_for(claimed_midway, timeout=args.timeout / 2)
        if not found:
            print("no job was caught mid-flow; nothing to kill")
            code = 1
        else:
            job = found["job"]
            pid = _pid_of(job.owner)
            victim_name = next((n for n, p in procs.items() if p.pid == pid), None)
            # ...when it is killed with SIGKILL...
            if victim_name is not None and pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                procs[victim_name].wait(10)
                print(f"SIGKILL {victim_name} (pid {pid}) while it held job {job.name} "
                      f"with {', '.join(found['done'])} done")
                victim = {"name": victim_name, "job": job, "done": found["done"]}
                # ...then another conductor takes the job over when the lease runs out.
                taken = _wait_for(
                    lambda: (board.get(job.id).owner or "").split("@")[0] not in ("", victim_name)
                    or board.get(job.id).state.finished,
                    timeout=args.timeout / 2, interval=0.01,
                )
                if taken:
                    victim["failover"] = time.monotonic() - killed_at
                    print(f"job {job.name} taken over {victim['failover']:.2f}s after the kill "
                          f"(lease {args.lease:.1f}s)")
        finished = _wait_for(
            lambda: all(board.get(j).state.finished for j in job_ids), timeout=args.timeout
        )
        if not finished:
            print("timed out waiting for the jobs to finish")
            code = 1
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    code = max(code, _summary(board, job_ids, log, victim))
    board.close()
    return code


def _with_namespace(url: str, namespace: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}namespace={namespace}"


def _summary(board: Any, job_ids: set[str], log: Path, victim: dict[str, Any]) -> int:
    executions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    runs: dict[str, Counter[str]] = defaultdict(Counter)
    conductors_of: dict[str, set[str]] = defaultdict(set)
    finisher: dict[str, str] = {}
    for e in executions:
        runs[e["job"]][e["task"]] += 1
        conductors_of[e["job"]].add(e["conductor"])
        if e["task"] == TASKS[-1]:
            finisher[e["job"]] = e["conductor"]
    states = Counter(board.get(j).state.value for j in job_ids)
    per_conductor = Counter(finisher.values())
    resumed = sorted(j for j, names in conductors_of.items() if len(names) > 1)
    repeated = {j: [t for t, n in c.items() if n > 1] for j, c in runs.items()}
    repeated = {j: ts for j, ts in repeated.items() if ts}

    print()
    print(f"{'conductor':<16}{'jobs completed':>16}")
    for name in sorted(per_conductor):
        print(f"{name:<16}{per_conductor[name]:>16}")
    print()
    print(f"{'jobs':<28}{len(job_ids):>6}")
    for state, count in sorted(states.items()):
        print(f"{'  ' + state:<28}{count:>6}")
    print(f"{'resumed jobs':<28}{len(resumed):>6}")
    print(f"{'task executions':<28}{len(executions):>6}")
    print(f"{'tasks run more than once':<28}{sum(len(t) for t in repeated.values()):>6}")
    ok = states.get("complete", 0) == len(job_ids)
    if victim:
        job = victim["job"]
        again = [t for t in victim["done"] if runs[job.id][t] > 1]
        print()
        print(f"killed {victim['name']} holding {job.name}: tasks done before the kill: "
              f"{', '.join(victim['done'])}; re-run after the takeover: {', '.join(again) or 'none'}")
        print(f"job {job.name} was run by: {', '.join(sorted(conductors_of[job.id]))}")
        ok = ok and not again and job.id in resumed
    # Only a task that was running at the kill may run twice.
    for job_id, tasks in repeated.items():
        if not victim or job_id != victim["job"].id or len(tasks) > 1:
            ok = False
            print(f"unexpected re-run in job {job_id}: {tasks}")
    print()
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
