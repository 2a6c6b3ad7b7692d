"""The bench workloads written for OpenStack TaskFlow: three no-op tasks, and a held job.

Imported by name (``peer_flows.noop3``) inside the peer's virtual environment,
where TaskFlow is installed; this project never imports it.
"""

from __future__ import annotations

import os
import time

from taskflow import task  # type: ignore[import-not-found]
from taskflow.patterns import linear_flow  # type: ignore[import-not-found]


class Noop(task.Task):  # type: ignore[misc]
    """Does nothing."""

    def execute(self) -> int:
        return 1


def noop3() -> linear_flow.Flow:
    """The factory TaskFlow's conductors re-import from the flow detail."""
    return linear_flow.Flow("noop3").add(Noop("a"), Noop("b"), Noop("c"))


class Hold(task.Task):  # type: ignore[misc]
    """Waits (at most two minutes) for the gate file named in the store."""

    def execute(self, gate: str) -> bool:
        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return True


def hold() -> linear_flow.Flow:
    """One task that keeps its job claimed until the gate file appears."""
    return linear_flow.Flow("hold").add(Hold("hold"))
