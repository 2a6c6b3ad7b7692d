"""Function tasks, named outputs and execution records."""

from __future__ import annotations

import json
import socket

import pytest

from conductor import engines
from conductor.exceptions import ExecutionFailure
from conductor.patterns import linear_flow
from conductor.records import ExceptionInfo, ExecutionInfo, TaskInfo
from conductor.task import FunctionTask, Task, returns, task


@task()
def add(x, y):
    """Add two numbers."""
    return x + y


@task(name="mul", provides="product")
def multiply(x, y):
    return x * y


@task
@returns("low", "high")
def bounds(x):
    return (x - 1, x + 1)


@returns("quotient", "remainder")
@task()
def divide(x, y):
    return {"quotient": x // y, "remainder": x % y}


def test_a_decorated_function_stays_callable():
    assert add(2, 3) == 5
    assert multiply(x=2, y=4) == 8
    assert isinstance(add, FunctionTask) and isinstance(add, Task)
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert add.__wrapped__(1, 1) == 2
    assert add.name == "add" and multiply.name == "mul"
    assert add.requires == {"x", "y"}
    assert bounds.provides == ("low", "high") and divide.provides == ("quotient", "remainder")
    assert bounds(5) == (4, 6)


def test_function_tasks_run_in_flows_with_named_outputs(engine_name):
    flow = linear_flow.Flow("f").add(
        add.copy(provides="s"),
        multiply,
        bounds,
        divide.copy(rebind={"x": "product", "y": "low"}),
    )
    values = engines.run(flow, {"x": 7, "y": 3}, engine=engine_name)
    assert values["s"] == 10 and values["product"] == 21
    assert (values["low"], values["high"]) == (6, 8)
    assert (values["quotient"], values["remainder"]) == (3, 3)


def test_task_function_with_revert_and_copy_options():
    undone = []

    def undo(x, result):
        undone.append((x, result))

    @task(revert=undo, provides="v")
    def double(x):
        return 2 * x

    @task
    def fail(v):
        raise RuntimeError(v)

    with pytest.raises(ExecutionFailure, match="RuntimeError: 10"):
        engines.run(linear_flow.Flow("f").add(double, fail), {"x": 5})
    assert undone == [(5, 10)]
    assert task(add.function, name="other").name == "other"
    with pytest.raises(TypeError, match="unknown task options"):
        add.copy(colour="red")
    with pytest.raises(TypeError, match="needs a callable"):
        task(42)


def test_returns_on_a_task_class_and_validation():
    @returns("a", "b")
    class Split(Task):
        def execute(self, s):
            return s.split(",")

    assert Split().provides == ("a", "b")
    assert engines.run(linear_flow.Flow("f").add(Split()), {"s": "x,y"})["b"] == "y"
    with pytest.raises(TypeError):
        returns()
    with pytest.raises(ValueError, match="repeat"):
        task(lambda: 1, provides=("a", "a"))


def test_positional_only_parameters_are_rejected():
    def f(x, /):
        return x

    with pytest.raises(TypeError, match="positional-only parameter 'x'"):
        task(f)


def test_every_execution_is_recorded(engine_name):
    flow = linear_flow.Flow("f").add(add.copy(provides="s"), multiply.copy(rebind={"x": "s"}))
    eng = engines.load(flow, {"x": 1, "y": 2}, engine=engine_name)
    eng.run()
    first, second = eng.storage.get_execution("add"), eng.storage.get_execution("mul")
    assert first.success is True and first.exception is None
    assert first.task_id == eng.storage.get_atom_uuid("add")
    assert second.parent_task_ids == [first.task_id]
    assert first.parent_task_ids == []
    info = second.execution
    assert info.hostname == socket.gethostname()
    # the phases nest as documented
    assert second.submit_time <= info.execution_start_time
    assert (
        info.execution_start_time
        <= info.input_transform_start_time
        <= info.input_transform_end_time
        <= info.task_start_time
        <= info.task_end_time
        <= info.result_transform_start_time
        <= info.result_transform_end_time
        <= info.execution_end_time
        <= second.received_time
    )


def test_a_failed_execution_records_the_exception():
    @task
    def broken():
        raise LookupError("no such thing")

    eng = engines.load(linear_flow.Flow("f").add(broken))
    with pytest.raises(ExecutionFailure):
        eng.run()
    record = eng.storage.get_execution("broken")
    assert record.success is False
    assert record.exception.type == "LookupError"
    assert record.exception.message == "no such thing"
    assert "raise LookupError" in record.exception.traceback
    assert record.execution.task_end_time == 0.0  # never returned
    assert record.execution.execution_end_time >= record.execution.execution_start_time


def test_records_round_trip_through_json():
    record = TaskInfo(
        task_id="id",
        name="n",
        parent_task_ids=["p"],
        submit_time=1.0,
        received_time=2.0,
        success=False,
        exception=ExceptionInfo("ValueError", "bad", "Traceback..."),
        execution=ExecutionInfo("host", 1.1, 1.9, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7),
        attempt=2,
    )
    assert TaskInfo.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record.to_dict()["execution"]["task_start_time"] == 1.4
    bare = TaskInfo("id", "n", [], 1.0)
    assert TaskInfo.from_dict(bare.to_dict()) == bare
