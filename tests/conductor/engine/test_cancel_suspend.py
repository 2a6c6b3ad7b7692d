"""Cancelling and suspending a running engine, from listeners and from other threads."""

from __future__ import annotations

import threading

import pytest

from conductor import engines, states
from conductor.exceptions import Cancelled, RevertFailure
from conductor.patterns import linear_flow, unordered_flow
from conductor.task import Task

from .helpers import Recorder, Step


class Gate(Task):
    """Signals ``started``, then waits (bounded) for ``release`` before finishing."""

    def __init__(self, name, log, started, release, **kwargs):
        super().__init__(name=name, **kwargs)
        self.log = log
        self.started = started
        self.release = release

    def execute(self):
        self.log.add(f"{self.name}.execute")
        self.started.set()
        assert self.release.wait(10), "test never released the gate"
        return self.name

    def revert(self, result):
        self.log.add(f"{self.name}.revert")


def test_cancel_from_a_listener_reverts_and_names_the_task(load):
    log = Recorder()
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log), Step("c", log))
    eng, seen = load(flow)

    def on_success(state, details):
        if details["task_name"] == "b":
            eng.cancel("job cancelled by operator")

    eng.atom_notifier.register(states.SUCCESS, on_success)
    with pytest.raises(Cancelled) as info:
        eng.run()
    err = info.value
    assert err.atom_name == "b"
    assert err.reason == "job cancelled by operator"
    assert str(err) == (
        "flow 'f' was cancelled at task 'b': job cancelled by operator; finished work was reverted"
    )
    assert log.events == ["a.execute", "b.execute", "b.revert", "a.revert"]
    assert eng.storage.get_atom_state("c") == states.PENDING
    assert seen.of("f") == [states.RUNNING, states.REVERTING, states.REVERTED]


def test_cancel_before_run_runs_nothing(load):
    log = Recorder()
    eng, _ = load(linear_flow.Flow("f").add(Step("a", log)))
    eng.cancel()
    with pytest.raises(Cancelled) as info:
        eng.run()
    assert info.value.atom_name is None
    assert "before any task ran" in str(info.value)
    assert log.events == []


def test_cancel_from_another_thread_lets_the_running_task_finish(engine_name):
    # Given a task blocked inside execute
    log = Recorder()
    started, release = threading.Event(), threading.Event()
    flow = linear_flow.Flow("f").add(
        Step("a", log), Gate("gate", log, started, release), Step("after", log)
    )
    eng = engines.load(flow, engine=engine_name)
    errors = []

    def run():
        try:
            eng.run()
        except Cancelled as err:
            errors.append(err)

    runner = threading.Thread(target=run)
    runner.start()
    assert started.wait(10)
    # When it is cancelled from this thread, then released
    eng.cancel()
    release.set()
    runner.join(10)
    # Then it finished, nothing else started, and everything was reverted
    assert not runner.is_alive()
    assert errors and errors[0].atom_name == "gate"
    assert log.events == ["a.execute", "gate.execute", "gate.revert", "a.revert"]


def test_cancel_with_a_failing_revert_raises_revert_failure(load):
    log = Recorder()

    class BadRevert(Step):
        def revert(self, result, flow_failures):
            raise OSError("disk gone")

    eng, _ = load(linear_flow.Flow("f").add(BadRevert("a", log), Step("b", log)))
    eng.atom_notifier.register(states.SUCCESS, lambda state, details: eng.cancel())
    with pytest.raises(RevertFailure, match="reverting task 'a' after a cancel failed") as info:
        eng.run()
    assert info.value.flow_failures == {}
    assert eng.storage.get_atom_state("a") == states.REVERT_FAILURE


def test_suspend_from_a_listener_and_resume_the_same_engine(load):
    log = Recorder()
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log), Step("c", log))
    eng, seen = load(flow)
    handler = lambda state, details: eng.suspend()  # noqa: E731
    eng.atom_notifier.register(states.SUCCESS, handler)
    eng.run()
    assert log.events == ["a.execute"]
    assert eng.storage.get_flow_state() == states.SUSPENDED
    eng.atom_notifier.deregister(states.SUCCESS, handler)
    eng.run()
    assert log.events == ["a.execute", "b.execute", "c.execute"]
    assert seen.of("f") == [
        states.RUNNING,
        states.SUSPENDING,
        states.SUSPENDED,
        states.RESUMING,
        states.RUNNING,
        states.SUCCESS,
    ]


def test_suspend_waits_for_running_tasks_in_parallel():
    # Given two tasks running at once and a third waiting for them
    log = Recorder()
    started_1, started_2, release = threading.Event(), threading.Event(), threading.Event()
    flow = linear_flow.Flow("f").add(
        unordered_flow.Flow("u").add(
            Gate("g1", log, started_1, release), Gate("g2", log, started_2, release)
        ),
        Step("after", log),
    )
    eng = engines.load(flow, engine="parallel", max_workers=2)
    runner = threading.Thread(target=eng.run)
    runner.start()
    assert started_1.wait(10) and started_2.wait(10)
    # When suspended while both run
    eng.suspend()
    release.set()
    runner.join(10)
    # Then both finished, nothing new started, nothing was reverted
    assert not runner.is_alive()
    assert sorted(log.events) == ["g1.execute", "g2.execute"]
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert eng.storage.get_atom_state("g1") == states.SUCCESS
    eng.run()
    assert log.events[-1] == "after.execute"


def test_suspend_when_the_last_task_finishes_ends_in_success(load):
    log = Recorder()
    eng, seen = load(linear_flow.Flow("f").add(Step("only", log)))
    eng.atom_notifier.register(states.SUCCESS, lambda state, details: eng.suspend())
    eng.run()
    assert seen.of("f") == [states.RUNNING, states.SUSPENDING, states.SUCCESS]


def test_a_running_engine_cannot_be_run_twice():
    log = Recorder()
    started, release = threading.Event(), threading.Event()
    eng = engines.load(linear_flow.Flow("f").add(Gate("g", log, started, release)))
    runner = threading.Thread(target=eng.run)
    runner.start()
    assert started.wait(10)
    try:
        with pytest.raises(Exception, match="already running"):
            eng.run()
    finally:
        release.set()
        runner.join(10)
    assert eng.storage.get_flow_state() == states.SUCCESS
