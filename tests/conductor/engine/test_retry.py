"""Retry controllers for subflows and per-task retry policies."""

from __future__ import annotations

import threading

import pytest
import tenacity

from conductor import engines, retry, states
from conductor.exceptions import Cancelled, ExecutionFailure
from conductor.patterns import linear_flow
from conductor.task import Task

from .helpers import Boom, Flaky, Recorder, Step


class UseValue(Task):
    """Succeeds only for the value ``good``; records every value it saw."""

    def __init__(self, good, seen, **kwargs):
        super().__init__(**kwargs)
        self.good = good
        self.seen = seen

    def execute(self, value):
        self.seen.append(value)
        if value != self.good:
            raise ValueError(f"bad value {value!r}")
        return value


def test_times_retries_the_subflow_until_it_succeeds(load):
    log = Recorder()
    flaky = Flaky("flaky", failures=2)
    sub = linear_flow.Flow("sub", retry=retry.Times(3, provides="attempt")).add(
        Step("before", log), flaky
    )
    eng, seen = load(linear_flow.Flow("f").add(sub))
    eng.run()
    assert flaky.calls == 3
    assert eng.storage.fetch("attempt") == 3
    # the successful step before the flaky one was reverted before each retry
    assert log.events == ["before.execute", "before.revert"] * 2 + ["before.execute"]
    assert seen.of("Times") == [
        states.RUNNING,
        states.SUCCESS,
        states.RETRYING,
        states.RUNNING,
        states.SUCCESS,
        states.RETRYING,
        states.RUNNING,
        states.SUCCESS,
    ]
    assert seen.of("flaky")[:6] == [
        states.RUNNING,
        states.FAILURE,
        states.REVERTING,
        states.REVERTED,
        states.PENDING,
        states.RUNNING,
    ]
    history = eng.storage.get_retry_history("Times")
    assert history.values() == [1, 2, 3]
    assert [sorted(f) for _, f in history] == [["flaky"], ["flaky"], []]
    assert history.caused_by(ConnectionError)


def test_times_gives_up_and_reverts_everything(load):
    log = Recorder()
    sub = linear_flow.Flow("sub", retry=retry.Times(2)).add(Boom("bad", log))
    eng, seen = load(linear_flow.Flow("f").add(Step("first", log), sub))
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    assert info.value.atom_name == "bad"
    assert log.events == [
        "first.execute",
        "bad.execute",
        "bad.revert",
        "bad.execute",
        "bad.revert",
        "first.revert",
    ]
    assert seen.of("Times")[-2:] == [states.REVERTING, states.REVERTED]


def test_for_each_tries_values_in_turn(load):
    seen_values = []
    sub = linear_flow.Flow("sub", retry=retry.ForEach(["a", "b", "c"], provides="value")).add(
        UseValue("b", seen_values)
    )
    eng, _ = load(sub)
    eng.run()
    assert seen_values == ["a", "b"]
    assert eng.storage.get("UseValue") == "b"


def test_parameterized_for_each_reads_values_from_the_store(load):
    seen_values = []
    controller = retry.ParameterizedForEach(rebind={"values": "servers"}, provides="value")
    sub = linear_flow.Flow("sub", retry=controller).add(UseValue("s3", seen_values))
    eng, _ = load(sub, {"servers": ["s1", "s2", "s3"]})
    eng.run()
    assert seen_values == ["s1", "s2", "s3"]

    exhausted = []
    controller = retry.ParameterizedForEach(provides="value")
    sub = linear_flow.Flow("sub", retry=controller).add(UseValue("none", exhausted))
    eng, _ = load(sub, {"values": [1, 2]})
    with pytest.raises(ExecutionFailure, match="bad value 2"):
        eng.run()
    assert exhausted == [1, 2]


def test_inner_revert_hands_the_failure_to_the_outer_controller(load):
    log = Recorder()
    flaky = Flaky("flaky", failures=1)
    inner = linear_flow.Flow("inner", retry=retry.AlwaysRevert("inner_retry")).add(flaky)
    outer = linear_flow.Flow("outer", retry=retry.Times(2, "outer_retry")).add(
        Step("a", log), inner
    )
    eng, seen = load(outer)
    eng.run()
    assert flaky.calls == 2
    assert log.events == ["a.execute", "a.revert", "a.execute"]
    assert seen.of("inner_retry") == [
        states.RUNNING,
        states.SUCCESS,
        states.REVERTING,
        states.REVERTED,
        states.PENDING,
        states.RUNNING,
        states.SUCCESS,
    ]
    assert eng.storage.get_retry_history("outer_retry").values() == [1, 2]


def test_revert_all_ignores_the_outer_controller(load):
    log = Recorder()
    inner = linear_flow.Flow("inner", retry=retry.Times(1, "inner_retry", revert_all=True)).add(
        Boom("bad", log)
    )
    outer = linear_flow.Flow("outer", retry=retry.Times(5, "outer_retry")).add(inner)
    eng, _ = load(outer)
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert log.events == ["bad.execute", "bad.revert"]
    assert len(eng.storage.get_retry_history("outer_retry")) == 1

    eng, _ = load(
        linear_flow.Flow("f", retry=retry.AlwaysRevertAll("always")).add(Boom("bad2", log))
    )
    with pytest.raises(ExecutionFailure, match="bad2"):
        eng.run()


def test_a_controller_that_cannot_decide_reverts_everything(load):
    class Broken(retry.Times):
        def on_failure(self, history, *args, **kwargs):
            raise RuntimeError("no idea")

    log = Recorder()
    eng, _ = load(linear_flow.Flow("f", retry=Broken(3)).add(Boom("bad", log)))
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert log.events == ["bad.execute", "bad.revert"]


def test_retry_policy_retries_a_task_in_place(load):
    log = Recorder()
    flaky = Flaky("flaky", failures=2, retry_policy=retry.RetryPolicy(attempts=3))
    eng, seen = load(linear_flow.Flow("f").add(Step("a", log), flaky))
    eng.run()
    assert flaky.calls == 3
    assert log.events == ["a.execute"]  # nothing reverted
    assert seen.of("flaky") == [
        states.RUNNING,
        states.RETRYING,
        states.RUNNING,
        states.RETRYING,
        states.RUNNING,
        states.SUCCESS,
    ]
    assert eng.storage.get_execution("flaky").attempt == 3


def test_retry_policy_gives_up_after_its_attempts(load):
    flaky = Flaky("flaky", failures=5, retry_policy=retry.RetryPolicy(attempts=2))
    eng, seen = load(linear_flow.Flow("f").add(flaky))
    with pytest.raises(ExecutionFailure, match="attempt 2 failed"):
        eng.run()
    assert flaky.calls == 2
    assert seen.of("flaky")[:4] == [states.RUNNING, states.RETRYING, states.RUNNING, states.FAILURE]


def test_retry_policy_only_retries_listed_errors(load):
    log = Recorder()
    policy = retry.RetryPolicy(attempts=5, retry_on=(ConnectionError,))
    eng, _ = load(linear_flow.Flow("f").add(Boom("bad", log, retry_policy=policy)))
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert log.events.count("bad.execute") == 1


def test_retry_policy_backoff_is_computed_by_tenacity():
    policy = retry.RetryPolicy(attempts=4, backoff=0.5, max_backoff=1.5)
    state = policy.new_state()
    delays = [policy.next_delay(state, ConnectionError()) for _ in range(4)]
    assert delays == [0.5, 1.0, 1.5, None]

    custom = retry.RetryPolicy(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(7))
    state = custom.new_state()
    assert custom.next_delay(state, OSError()) == 7
    assert custom.next_delay(state, OSError()) is None
    with pytest.raises(ValueError):
        retry.RetryPolicy(attempts=0)


def test_cancel_during_backoff_stops_waiting_and_reverts(engine_name):
    # Given a task whose retry waits a minute between attempts
    log = Recorder()
    flaky = Flaky("flaky", failures=1, retry_policy=retry.RetryPolicy(attempts=2, backoff=60))
    eng = engines.load(linear_flow.Flow("f").add(Step("a", log), flaky), engine=engine_name)
    retrying = threading.Event()
    eng.atom_notifier.register(states.RETRYING, lambda state, details: retrying.set())
    # When it is cancelled from another thread while waiting
    worker = threading.Thread(target=lambda: retrying.wait(10) and eng.cancel("operator"))
    worker.start()
    with pytest.raises(Cancelled) as info:
        eng.run()
    worker.join(10)
    # Then the wait ended early and the finished work was undone
    assert info.value.reason == "operator"
    assert flaky.calls == 1
    assert log.events == ["a.execute", "a.revert"]
    assert eng.storage.get_atom_state("flaky") == states.REVERTED


def test_retry_policy_waits_its_backoff_then_runs_again(load):
    flaky = Flaky("flaky", failures=1, retry_policy=retry.RetryPolicy(attempts=2, backoff=0.01))
    eng, _ = load(linear_flow.Flow("f").add(flaky))
    retrying = []
    eng.atom_notifier.register(states.RETRYING, lambda state, details: retrying.append(details))
    eng.run()
    assert flaky.calls == 2
    assert retrying[0]["attempt"] == 1 and retrying[0]["delay"] == 0.01
    assert retrying[0]["result"].exception_str == "attempt 1 failed"


def test_suspend_during_backoff_then_resume(load):
    log = Recorder()
    flaky = Flaky("flaky", failures=1, retry_policy=retry.RetryPolicy(attempts=2, backoff=0.01))
    eng, seen = load(linear_flow.Flow("f").add(flaky, Step("after", log)))
    eng.atom_notifier.register(states.RETRYING, lambda state, details: eng.suspend())
    eng.run()
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert eng.storage.get_atom_state("flaky") == states.RETRYING
    eng.run()
    assert flaky.calls == 2 and log.events == ["after.execute"]
    assert seen.of("flaky") == [states.RUNNING, states.RETRYING, states.RUNNING, states.SUCCESS]
