"""The flow the chaos suite runs, writing the oracle's log outside the board.

``chaos`` is a line of ``TASKS``. Each task appends one JSON line when it
starts and one when it ends to ``$CHAOS_ORACLE_DIR/oracle-<pid>.jsonl``: job
id, task name, fencing token, pid and times (wall clock and the host's
monotonic clock, which every process shares). Each line is a single
``O_APPEND`` write, so a process killed with ``kill -9`` leaves whole lines
behind and never interleaves with itself. A task returns its token, which the
board saves with its progress and the job's result carries at the end.

The job's store steers the work: ``chaos.pause`` seconds per task (the
simulated work, during which faults strike).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from conductor import context, task
from conductor.flow import Flow
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()
FLOW = "chaos"
TASKS = ("fetch", "transform", "publish")
ORACLE_ENV = "CHAOS_ORACLE_DIR"


def oracle_line(event: str, task_name: str) -> None:
    """Append one event of the running task to this process's oracle log."""
    folder = os.environ.get(ORACLE_ENV)
    if not folder:
        return
    ctx = context.current()
    line = {
        "ev": event,
        "job": ctx.get("job_id"),
        "task": task_name,
        "token": ctx.get("fencing_token"),
        "pid": os.getpid(),
        "t": time.time(),
        "m": time.monotonic(),
    }
    path = os.path.join(folder, f"oracle-{os.getpid()}.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


class Step(task.Task):
    """One step of the chaos flow: log, work for a while, log, return the token."""

    def execute(self, chaos: dict[str, Any]) -> dict[str, Any]:
        oracle_line("start", self.name)
        time.sleep(float(chaos.get("pause", 0.05)))  # the work a fault may interrupt
        oracle_line("end", self.name)
        return {"token": context.current().get("fencing_token"), "pid": os.getpid()}


@FLOWS.register(FLOW)
def chaos_flow() -> Flow:
    """fetch -> transform -> publish, each providing ``<name>_out``."""
    return linear_flow.Flow(FLOW).add(*(Step(name, provides=f"{name}_out") for name in TASKS))
