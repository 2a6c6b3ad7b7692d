"""Engine overhead: per-task cost of no-op flows, and the per-job cost a conductor pays.

Run: ``.venv/bin/python bench/engine_overhead.py [--tasks 1000] [--jobs 2000]``

Prints, for a linear flow of ``--tasks`` no-op tasks, the wall and CPU time
per task of the serial and parallel engines; then the CPU time (from
``time.process_time``) of ``engines.load(flow, store)`` + ``run()`` of a
3-task linear flow of no-op tasks with one claim-checking listener and an
in-memory progress backend attached, as a conductor runs each job.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from conductor import engines
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the long linear flow")
    parser.add_argument("--rounds", type=int, default=5, help="runs of the long flow (best kept)")
    parser.add_argument("--jobs", type=int, default=2000, help="3-task jobs to load and run")
    args = parser.parse_args()
    gc.collect()
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


if __name__ == "__main__":
    main()
