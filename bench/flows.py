"""Flows the bench's conductors serve (``conductor run --flows bench.flows``).

``noop3`` is three no-op tasks in a line: what a job costs beyond its work.
``hold`` is one task that waits until the file named by ``gate`` in the job's
store exists (at most ``HOLD_LIMIT`` seconds), so a job stays claimed while
its owner is killed.
"""

from __future__ import annotations

import os
import time

from conductor import task
from conductor.flow import Flow
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()

#: Longest a ``hold`` task waits for its gate file, in seconds.
HOLD_LIMIT = 120.0


class Noop(task.Task):
    """Does nothing; the engine's and the board's bookkeeping is all it costs."""

    def execute(self) -> int:
        return 1


class Hold(task.Task):
    """Waits for the gate file so that its job stays claimed."""

    def execute(self, gate: str) -> bool:
        deadline = time.monotonic() + HOLD_LIMIT
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return True


@FLOWS.register("noop3")
def noop3() -> Flow:
    """Three no-op tasks in a line."""
    return linear_flow.Flow("noop3").add(Noop("a"), Noop("b"), Noop("c"))


@FLOWS.register("hold")
def hold() -> Flow:
    """One task that holds its claim until the gate file appears."""
    return linear_flow.Flow("hold").add(Hold("hold"))
