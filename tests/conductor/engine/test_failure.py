"""Failures: reverting in reverse order, the error raised, Failure objects, revert failures."""

from __future__ import annotations

import json

import pytest

from conductor import engines, states
from conductor.exceptions import ExecutionFailure, RemoteFailure, RevertFailure
from conductor.failure import Failure
from conductor.patterns import linear_flow, unordered_flow
from conductor.task import Task

from .helpers import Boom, Recorder, Step


def test_failure_reverts_completed_tasks_in_reverse_order(load):
    log = Recorder()
    flow = linear_flow.Flow("f").add(
        Step("a", log), Step("b", log), Boom("c", log), Step("never", log)
    )
    eng, seen = load(flow)
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    assert log.events == [
        "a.execute",
        "b.execute",
        "c.execute",
        "c.revert",
        "b.revert",
        "a.revert",
    ]
    err = info.value
    assert err.atom_name == "c"
    assert "task 'c' raised ValueError: boom" in str(err)
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "boom"
    assert err.failure.check(ValueError) is ValueError
    assert err.failures == {"c": err.failure}
    assert seen.of("f") == [states.RUNNING, states.REVERTING, states.REVERTED]
    assert seen.of("a") == [states.RUNNING, states.SUCCESS, states.REVERTING, states.REVERTED]
    assert seen.of("c") == [states.RUNNING, states.FAILURE, states.REVERTING, states.REVERTED]
    assert seen.of("never") == []
    assert eng.storage.get_atom_state("never") == states.PENDING
    assert eng.storage.get_flow_state() == states.REVERTED


def test_revert_gets_the_result_and_the_flow_failures(load):
    received = {}

    class Remember(Task):
        def execute(self, x):
            return x * 2

        def revert(self, x, result, flow_failures):
            received.update(x=x, result=result, flow_failures=flow_failures)

    log = Recorder()
    eng, _ = load(linear_flow.Flow("f").add(Remember(), Boom("bad", log)), {"x": 21})
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert received["x"] == 21
    assert received["result"] == 42
    assert list(received["flow_failures"]) == ["bad"]
    assert received["flow_failures"]["bad"].exception_str == "boom"
    assert eng.storage.get_revert_result("Remember") is None


def test_failed_task_revert_receives_its_failure(load):
    seen = []

    class Fails(Task):
        def execute(self):
            raise KeyError("k")

        def revert(self, result):
            seen.append(result)

    eng, _ = load(linear_flow.Flow("f").add(Fails()))
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert len(seen) == 1 and isinstance(seen[0], Failure)
    assert seen[0].check(LookupError) is LookupError


def test_parallel_failures_are_all_reported():
    log = Recorder()
    flow = unordered_flow.Flow("u").add(Boom("x", log, "one"), Boom("y", log, "two"))
    eng = engines.load(flow, engine="parallel", max_workers=2)
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    assert set(info.value.failures) == {"x", "y"}
    assert "task 'x' raised ValueError: one" in str(info.value)
    assert "task 'y' raised ValueError: two" in str(info.value)


def test_revert_failure_stops_reverting_and_fails_the_flow(load):
    log = Recorder()

    class BadRevert(Step):
        def revert(self, result, flow_failures):
            raise RuntimeError("cannot undo")

    flow = linear_flow.Flow("f").add(Step("a", log), BadRevert("b", log), Boom("c", log))
    eng, seen = load(flow)
    with pytest.raises(RevertFailure) as info:
        eng.run()
    err = info.value
    assert isinstance(err, ExecutionFailure)
    assert err.atom_name == "b"
    assert err.failure.exception_str == "cannot undo"
    assert err.flow_failures["c"].exception_str == "boom"
    assert "reverting task 'b' after task 'c' raised ValueError: boom failed" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    # "a" was not reverted: undoing it after "b" could not be undone is unsafe.
    assert log.events == ["a.execute", "b.execute", "c.execute", "c.revert"]
    assert eng.storage.get_atom_state("b") == states.REVERT_FAILURE
    assert eng.storage.get_atom_state("a") == states.SUCCESS
    assert eng.storage.get_flow_state() == states.FAILURE
    assert seen.of("f")[-2:] == [states.REVERTING, states.FAILURE]
    assert eng.storage.get_failures()["b"].exception_str == "cannot undo"


def test_failure_round_trips_through_json_without_pickle():
    def inner():
        raise KeyError("missing")

    try:
        try:
            inner()
        except KeyError as err:
            raise RuntimeError("wrapped") from err
    except RuntimeError as err:
        failure = Failure.from_exception(err)

    data = json.loads(json.dumps(failure.to_dict()))
    back = Failure.from_dict(data)
    assert back == failure
    assert back.exception is None and back.exc_info is None
    assert failure.exc_info is not None
    assert back.exc_type_names[:3] == ("RuntimeError", "Exception", "BaseException")
    assert "in inner" not in back.traceback_str  # the cause has its own traceback
    assert back.cause is not None and "in inner" in back.cause.traceback_str
    assert back.cause.exception_str == "'missing'"
    assert back.check(KeyError) is None and back.cause.check(LookupError) is LookupError
    assert [c.exception_type_name for c in back.iter_causes()] == ["KeyError"]
    assert str(back) == "Failure: RuntimeError: wrapped"
    assert back.pformat(traceback=True).startswith("RuntimeError: wrapped\nTraceback")
    with pytest.raises(RemoteFailure, match="RuntimeError: wrapped"):
        back.reraise()
    with pytest.raises(RuntimeError, match="wrapped"):
        failure.reraise()


def test_custom_exception_types_are_named_with_their_module():
    class Custom(Exception):
        pass

    failure = Failure.from_exception(Custom("x"))
    assert failure.exception_type_name == (
        f"{__name__}."
        "test_custom_exception_types_are_named_with_their_module.<locals>.Custom"
    )
    assert failure.exc_type_names[1:] == ("Exception", "BaseException")
    assert failure.check(ValueError, Custom) is Custom
