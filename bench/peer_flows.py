"""The bench workload written for OpenStack TaskFlow: three no-op tasks in a line.

Imported by name (``peer_flows.noop3``) inside the peer's virtual environment,
where TaskFlow is installed; this project never imports it.
"""

from __future__ import annotations

from taskflow import task  # type: ignore[import-not-found]
from taskflow.patterns import linear_flow  # type: ignore[import-not-found]


class Noop(task.Task):  # type: ignore[misc]
    """Does nothing."""

    def execute(self) -> int:
        return 1


def noop3() -> linear_flow.Flow:
    """The factory TaskFlow's conductors re-import from the flow detail."""
    return linear_flow.Flow("noop3").add(Noop("a"), Noop("b"), Noop("c"))
