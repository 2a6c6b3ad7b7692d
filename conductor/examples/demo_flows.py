"""The demo's flow: an order taken through three steps that each take a moment.

Every task execution appends one JSON line to the file named by
``CONDUCTOR_DEMO_LOG`` (job, task, conductor, pid, fencing token), so the demo
can show which conductor ran what and that finished tasks were not re-run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from conductor import context, task
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()


def _record(step: str) -> None:
    ctx = context.current()
    line = json.dumps({
        "job": ctx.get("job_id"),
        "task": step,
        "conductor": ctx.get("conductor"),
        "pid": os.getpid(),
        "token": ctx.get("fencing_token"),
        "at": time.time(),
    })
    path = os.environ.get("CONDUCTOR_DEMO_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _pause() -> None:
    time.sleep(float(os.environ.get("CONDUCTOR_DEMO_TASK_SECONDS", "0.15")))


class Validate(task.Task):
    """Check the order."""

    def execute(self, order_id: int, amount: float) -> dict[str, Any]:
        _pause()
        _record("validate")
        return {"order_id": order_id, "amount": amount, "valid": amount > 0}


class Charge(task.Task):
    """Charge the customer (a real system would pass the fencing token along)."""

    def execute(self, validated: dict[str, Any]) -> str:
        _pause()
        _record("charge")
        return f"charge-{validated['order_id']}"


class Ship(task.Task):
    """Ship the goods."""

    def execute(self, validated: dict[str, Any], charge_id: str) -> str:
        _pause()
        _record("ship")
        return f"parcel-{validated['order_id']}-{charge_id}"


@FLOWS.register("order")
def order_flow() -> linear_flow.Flow:
    """validate -> charge -> ship."""
    return linear_flow.Flow("order").add(
        Validate(provides="validated"),
        Charge(provides="charge_id"),
        Ship(provides="parcel"),
    )
