"""Flows whose tasks do nothing, for measuring the conductor's own overhead."""

from __future__ import annotations

from conductor import task
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()


class Noop(task.Task):
    """Returns its position; costs nothing but the engine's bookkeeping."""

    def execute(self) -> int:
        return 1


@FLOWS.register("noop3")
def noop3() -> linear_flow.Flow:
    """Three no-op tasks in a line."""
    return linear_flow.Flow("noop3").add(Noop("a"), Noop("b"), Noop("c"))
