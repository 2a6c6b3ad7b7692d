"""Flows used by the conductor tests (importable by conductor subprocesses).

Tasks append one JSON line per execution to ``$CONDUCTOR_TEST_LOG`` so tests
can count executions across processes. Their behaviour is steered by the
job's store: ``pause`` seconds per task, ``fail_at`` a task to raise in,
``block_at`` a task that waits for a file to appear, ``crash_at`` a task that
kills its own process.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

from conductor import context, task
from conductor.patterns import linear_flow
from conductor.registry import FlowRegistry

FLOWS = FlowRegistry()
STEPS = ("one", "two", "three")


def record(event: str, step: str, ctx: Mapping | None = None) -> None:
    """Append one execution event (of the current task's job, or of ``ctx``'s) to the log."""
    ctx = context.current() if ctx is None else ctx
    path = os.environ.get("CONDUCTOR_TEST_LOG")
    line = {
        "event": event, "job": ctx.get("job_id"), "task": step, "conductor": ctx.get("conductor"),
        "pid": os.getpid(), "token": ctx.get("fencing_token"), "at": time.time(),
    }
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
    RECORDED.append(line)


RECORDED: list[dict] = []


class Step(task.Task):
    """One step; behaviour chosen by the store."""

    def execute(self, spec: dict) -> str:
        step = self.name
        record("start", step)
        if spec.get("crash_at") == step:
            os._exit(17)
        gate = spec.get("block_at") == step and spec.get("gate")
        deadline = time.monotonic() + float(spec.get("block_limit", 30))
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        if spec.get("pause"):
            time.sleep(float(spec["pause"]))
        if spec.get("fail_at") == step:
            raise RuntimeError(f"{step} failed on purpose")
        record("done", step)
        return f"{step}-ok"

    def revert(self, spec: dict, **kwargs) -> None:
        record("revert", self.name)


@FLOWS.register("steps")
def steps_flow():
    """one -> two -> three."""
    return linear_flow.Flow("steps").add(*(Step(name, provides=f"{name}_result") for name in STEPS))


@FLOWS.register("big-result")
def big_result_flow():
    """A flow whose result is too large for the board."""

    class Big(task.Task):
        def execute(self) -> str:
            return "x" * (2 << 20)

    return linear_flow.Flow("big-result").add(Big("big", provides="blob"))


def _gate_open(spec: dict) -> bool:
    return bool(spec.get("gate")) and os.path.exists(spec["gate"])


class Long(task.Task):
    """A long task steered by ``spec["mode"]``; it ends when the ``gate`` file appears.

    ``progress``: reports ``steps`` progress values, then waits for the gate.
    ``cooperative``: polls ``context.cancelled()`` and stops with ``check_cancelled()``.
    ``stubborn``: ignores every stop until the gate opens (or ``block_limit`` passes).
    """

    def execute(self, spec: dict) -> str:
        record("start", self.name)
        mode = spec.get("mode")
        ctx = context.current()
        ctx.on_cancel(lambda reason: record(f"on_cancel:{reason}", self.name, ctx))
        deadline = time.monotonic() + float(spec.get("block_limit", 60))
        if mode == "progress":
            steps = int(spec.get("steps", 5))
            for n in range(1, steps + 1):
                context.progress(n / steps, f"step {n} of {steps}", step=n)
        while not _gate_open(spec) and time.monotonic() < deadline:
            if mode != "stubborn" and context.cancelled():
                record(f"stopped:{ctx.cancel_reason}", self.name)
                context.check_cancelled()
            time.sleep(0.005)
        record("done", self.name)
        return f"{self.name}-ok"


@FLOWS.register("long")
def long_flow():
    """one -> long -> three, the middle task steered by the store."""
    return linear_flow.Flow("long").add(
        Step("one", provides="one_result"),
        Long("long", provides="long_result"),
        Step("three", provides="three_result"),
    )


class Sabotage(task.Task):
    """Breaks this process's heartbeat the way ``--lease 1e308`` once did."""

    def execute(self) -> str:
        from conductor.conductor import Conductor

        def renew(self: Conductor) -> None:
            raise OverflowError("cannot convert float infinity to integer")

        Conductor._renew = renew  # type: ignore[method-assign]
        record("done", self.name)
        return "sabotaged"


@FLOWS.register("sabotage-heartbeat")
def sabotage_flow():
    """A task that kills the heartbeat of the conductor running it."""
    return linear_flow.Flow("sabotage-heartbeat").add(Sabotage("sabotage"))


class Parent(task.Task):
    """Posts ``spec["children"]`` children (flow ``spec["child_flow"]``, default ``steps``)
    and waits for them all."""

    def execute(self, spec: dict) -> list:
        record("start", self.name)
        for n in range(int(spec.get("children", 3))):
            child = {"spec": spec.get("child", {})}
            context.post_child(f"part-{n}", spec.get("child_flow", "steps"), child, key=str(n))
        record("posted", self.name)
        done = context.wait_for_children(timeout=spec.get("wait_timeout"))
        record("done", self.name)
        return sorted(child.state.value for child in done)


@FLOWS.register("parent")
def parent_flow():
    """One task that posts children and waits for them."""
    return linear_flow.Flow("parent").add(Parent("parent", provides="children"))
