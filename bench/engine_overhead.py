"""Engine overhead: per-task cost of no-op flows, and the per-job cost a conductor pays.

Run: ``.venv/bin/python bench/engine_overhead.py [--tasks 1000] [--jobs 2000]``

Prints, for a linear flow of ``--tasks`` no-op tasks, the wall and CPU time
per task of the serial and parallel engines; then the CPU time (from
``time.process_time``) of ``engines.load(flow, store)`` + ``run()`` of a
3-task linear flow of no-op tasks with one claim-checking listener and an
in-memory progress backend attached, as a conductor runs each job; then the
CPU time per job of a whole :class:`~conductor.conductor.Conductor` (claim
loop, worker, heartbeat, on a ``memory://`` board in this process, logging at
ERROR as ``conductor run --log-level ERROR``) working through ``--jobs``
waiting jobs of the bench's ``noop3`` flow: what a conductor costs per job
apart from its board's client and server.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import threading
import time
import uuid
from typing import Any

import jobboard
from bench.flows import FLOWS
from conductor import engines
from conductor.conductor import Conductor, ConductorEvents
from conductor.listeners.claims import CheckingClaimListener
from conductor.patterns import linear_flow
from conductor.storage import MemoryProgress
from conductor.task import Task


class NoOp(Task):
    """Does nothing."""

    def execute(self) -> None:
        return None


class NoOpWithInput(Task):
    """Reads one store value and returns it (exercises argument binding)."""

    def execute(self, x: int) -> int:
        return x


class _Board:
    """A board whose claim never changes hands (the listener's check stays local)."""

    def find_owner(self, job: Any) -> str:
        return "me"


def per_task(engine: str, tasks: int, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` wall and CPU microseconds per task of a ``tasks``-long linear flow."""
    walls, cpus = [], []
    for _ in range(rounds):
        flow = linear_flow.Flow("bench").add(*(NoOp(name=f"t{i}") for i in range(tasks)))
        eng = engines.load(flow, engine=engine)
        wall, cpu = time.perf_counter(), time.process_time()
        eng.run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls) / tasks * 1e6, min(cpus) / tasks * 1e6


def per_job(jobs: int) -> list[float]:
    """CPU microseconds of load + run of a 3-task job, in batches (one figure per batch)."""
    board = _Board()
    figures = []
    batch = max(1, jobs // 10)
    for _ in range(10):
        start = time.process_time()
        for _ in range(batch):
            flow = linear_flow.Flow("job").add(
                NoOpWithInput(name="a", provides="y"),
                NoOp(name="b"),
                NoOpWithInput(name="c", rebind={"x": "y"}),
            )
            eng = engines.load(flow, {"x": 1}, progress=MemoryProgress(), context={"job": "j"})
            with CheckingClaimListener(eng, "job", board, "me"):
                eng.run()
        figures.append((time.process_time() - start) / batch * 1e6)
    return figures


def conductor_per_job(jobs: int, url: str | None = None) -> float:
    """CPU microseconds per job of this process while a conductor runs ``jobs`` waiting
    ``noop3`` jobs posted beforehand (the posts are not counted)."""
    url = url or f"memory://bench-{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(url)
    for n in range(jobs):
        board.post(f"job-{n}", "noop3")
    conductor = Conductor("bench", jobboard.connect(url), FLOWS)
    all_done = threading.Event()
    done = 0

    def consumed(_event: str, _details: Any) -> None:
        nonlocal done
        done += 1
        if done == jobs:
            all_done.set()

    conductor.notifier.register(ConductorEvents.CONSUMED, consumed)
    thread = threading.Thread(target=conductor.run, name="conductor")
    start = time.process_time()
    thread.start()
    finished = all_done.wait(max(120.0, jobs / 20))
    cpu = time.process_time() - start
    conductor.stop()
    thread.join(30)
    conductor.board.close()
    board.close()
    if not finished:
        raise TimeoutError(f"conductor ran {done} of {jobs} jobs")
    return cpu / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the long linear flow")
    parser.add_argument("--rounds", type=int, default=5, help="runs of the long flow (best kept)")
    parser.add_argument("--jobs", type=int, default=2000, help="3-task jobs to load and run")
    parser.add_argument("--conductor-rounds", type=int, default=3, help="whole-conductor runs")
    parser.add_argument(
        "--conductor-board", help="board URL of the whole-conductor runs (default: memory://)"
    )
    parser.add_argument(
        "--conductor-only", action="store_true", help="print the whole-conductor figure only"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    gc.collect()
    if not args.conductor_only:
        for engine in ("serial", "parallel"):
            wall, cpu = per_task(engine, args.tasks, args.rounds)
            print(
                f"{engine:8s} {args.tasks}-task linear flow: {wall:7.1f} us/task wall, "
                f"{cpu:7.1f} us/task CPU"
            )
        figures = per_job(args.jobs)
        print(
            f"per job (load + run, 3 tasks, 1 listener, progress backend): "
            f"median {statistics.median(figures):.0f} us CPU, best {min(figures):.0f} us CPU"
        )
    whole = [
        conductor_per_job(args.jobs, args.conductor_board) for _ in range(args.conductor_rounds)
    ]
    where = "memory board" if args.conductor_board is None else "given board"
    print(
        f"per job (whole conductor, {where}, noop3, {args.jobs} jobs x "
        f"{args.conductor_rounds}): median {statistics.median(whole):.0f} us CPU, "
        f"best {min(whole):.0f} us CPU"
    )


if __name__ == "__main__":
    main()
