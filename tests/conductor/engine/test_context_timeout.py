"""The job context visible to tasks, and per-task timeouts."""

from __future__ import annotations

import threading

import pytest

from conductor import context, engines, states
from conductor.exceptions import ExecutionFailure, TaskTimeout
from conductor.patterns import linear_flow, unordered_flow
from conductor.retry import RetryPolicy
from conductor.task import Task, task


def test_current_is_empty_outside_tasks():
    assert dict(context.current()) == {}


def test_tasks_see_the_context_in_execute_and_revert(engine_name):
    seen = []

    class Look(Task):
        def execute(self):
            seen.append(("execute", dict(context.current()), threading.get_ident()))

        def revert(self):
            seen.append(("revert", dict(context.current()), threading.get_ident()))

    @task
    def fail():
        raise RuntimeError("stop")

    job = {"job_id": "j-1", "token": 7}
    flow = linear_flow.Flow("f").add(
        unordered_flow.Flow("u").add(Look(name="l1"), Look(name="l2")), fail
    )
    eng = engines.load(flow, engine=engine_name, context=job)
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert [(what, ctx) for what, ctx, _ in seen] == [
        ("execute", job),
        ("execute", job),
        ("revert", job),
        ("revert", job),
    ]
    assert dict(context.current()) == {}
    if engine_name == "parallel":
        assert all(ident != threading.get_ident() for what, _, ident in seen if what == "execute")


def test_context_is_not_bound_as_an_argument():
    class Wants(Task):
        def execute(self, token):
            return token

    with pytest.raises(Exception, match="needs 'token'"):
        engines.load(linear_flow.Flow("f").add(Wants()), context={"token": 1})


def test_a_task_over_its_timeout_fails_with_task_timeout(engine_name):
    release = threading.Event()
    seen_context = []

    class Hang(Task):
        def execute(self):
            seen_context.append(dict(context.current()))
            release.wait(10)

    eng = engines.load(
        linear_flow.Flow("f").add(Hang(timeout=0.05)), engine=engine_name, context={"k": 1}
    )
    try:
        with pytest.raises(ExecutionFailure) as info:
            eng.run()
    finally:
        release.set()
    assert isinstance(info.value.__cause__, TaskTimeout)
    assert "task 'Hang' did not finish within its 0.05 s timeout" in str(info.value)
    assert seen_context == [{"k": 1}]
    assert eng.storage.get_atom_state("Hang") == states.REVERTED


def test_a_timeout_is_retried_by_a_retry_policy():
    calls = []
    release = threading.Event()

    @task(timeout=0.05, retry_policy=RetryPolicy(attempts=2, retry_on=TaskTimeout))
    def slow_then_fast():
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)
        return "done"

    try:
        result = engines.run(linear_flow.Flow("f").add(slow_then_fast.copy(provides="r")))
    finally:
        release.set()
    assert result["r"] == "done"
    assert len(calls) == 2


def test_a_fast_task_with_a_timeout_returns_its_result_and_errors():
    @task(timeout=5, provides="v")
    def quick():
        return 3

    @task(timeout=5)
    def broken():
        raise KeyError("nope")

    assert engines.run(linear_flow.Flow("f").add(quick))["v"] == 3
    with pytest.raises(ExecutionFailure) as info:
        engines.run(linear_flow.Flow("g").add(broken))
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match="timeout must be positive"):
        task(lambda: None, timeout=0)
