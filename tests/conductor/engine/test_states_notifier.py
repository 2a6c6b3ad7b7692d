"""The state machine, the notifier, and graph-flow deciders (the IGNORE path)."""

from __future__ import annotations

import logging

import pytest

from conductor import retry, states
from conductor.exceptions import ExecutionFailure, InvalidState
from conductor.patterns import graph_flow, linear_flow
from conductor.storage import MemoryProgress
from conductor.task import task
from conductor.types.notifier import ANY, Notifier

from .helpers import Flaky, Recorder, Step


def test_transition_tables_allow_exactly_the_documented_moves():
    assert (states.PENDING, states.SUCCESS) not in states.atom_transitions()
    assert (states.REVERT_FAILURE, states.PENDING) not in states.atom_transitions()
    assert (states.SUCCESS, states.RUNNING) not in states.flow_transitions()
    states.check_atom_transition(states.RUNNING, states.RETRYING)
    states.check_flow_transition(states.SUSPENDED, states.RESUMING)
    with pytest.raises(InvalidState, match="an atom cannot move from state 'PENDING' to 'SUCCESS'"):
        states.check_atom_transition(states.PENDING, states.SUCCESS)
    with pytest.raises(InvalidState, match="a flow cannot move"):
        states.check_flow_transition(states.REVERTED, states.RUNNING)
    with pytest.raises(InvalidState):
        states.check_atom_transition("NOT_A_STATE", states.RUNNING)
    # every state can be reached and every non-terminal state can be left
    reached = {new for _, new in states.atom_transitions()} | {states.PENDING}
    assert reached == states.ATOM_STATES
    assert {old for old, _ in states.flow_transitions()} == states.FLOW_STATES - {
        states.SUCCESS,
        states.REVERTED,
        states.FAILURE,
    }


def test_notifier_dispatch_filters_and_registration():
    notifier = Notifier()
    got = []

    def on_any(state, details, tag):
        got.append(("any", state, tag))

    def on_success(state, details):
        got.append(("success", state, details["n"]))

    assert not notifier.has_listeners()
    notifier.notify(states.SUCCESS, {"n": 0})  # nobody listens: nothing happens
    notifier.register(ANY, on_any, args=["t"])
    notifier.register(states.SUCCESS, on_success, details_filter=lambda d: d["n"] > 1)
    with pytest.raises(ValueError, match="already registered"):
        notifier.register(ANY, on_any)
    with pytest.raises(ValueError, match="callable"):
        notifier.register(ANY, "nope")
    notifier.notify(states.SUCCESS, {"n": 1})
    notifier.notify(states.SUCCESS, {"n": 2})
    notifier.notify(states.RUNNING, {"n": 3})
    assert got == [
        ("any", "SUCCESS", "t"),
        ("success", "SUCCESS", 2),
        ("any", "SUCCESS", "t"),
        ("any", "RUNNING", "t"),
    ]
    assert notifier.is_registered(ANY, on_any)
    assert sorted(event for event, _ in notifier.listeners_iter()) == ["*", "SUCCESS"]
    assert notifier.deregister(ANY, on_any) is True
    assert notifier.deregister(ANY, on_any) is False
    assert notifier.deregister_event(states.SUCCESS) == 1
    assert len(notifier) == 0
    notifier.register(ANY, on_any, args=["x"])
    notifier.reset()
    assert not notifier.has_listeners()


def test_notifier_logs_a_raising_callback_and_carries_on(caplog):
    notifier = Notifier()
    got = []

    def broken(state, details):
        raise RuntimeError("bug")

    notifier.register(ANY, broken)
    notifier.register(ANY, lambda state, details: got.append(state))
    notifier.register(ANY, lambda s, d: got.append("filtered"), details_filter=lambda d: 1 / 0)
    with caplog.at_level(logging.WARNING):
        notifier.notify("X", {})
    assert got == ["X"]
    assert len([r for r in caplog.records if "failed on event X" in r.getMessage()]) == 2


def test_a_decider_can_skip_part_of_a_graph(load):
    log = Recorder()
    check = Step("check", log, value={"ready": False})
    skipped = Step("skipped", log)
    after_skipped = Step("after_skipped", log, requires=())
    independent = Step("independent", log)
    flow = graph_flow.Flow("g").add(check, skipped, after_skipped, independent)
    flow.link(check, skipped, decider=lambda history: history["check"]["ready"])
    flow.link(skipped, after_skipped)
    progress = MemoryProgress()
    eng, seen = load(linear_flow.Flow("f").add(flow, Step("end", log)), progress=progress)
    eng.run()
    assert "skipped.execute" not in log.events
    assert "after_skipped.execute" not in log.events
    assert {"check.execute", "independent.execute", "end.execute"} <= set(log.events)
    assert log.events[-1] == "end.execute"
    assert seen.of("skipped") == [states.IGNORE]
    assert seen.of("after_skipped") == [states.IGNORE]
    assert eng.storage.get_atom_state("after_skipped") == states.IGNORE
    assert ("skipped", states.IGNORE) in progress.saves
    assert progress.records["skipped"]["result"] is None


def test_a_decider_that_keeps_lets_the_graph_run(load):
    log = Recorder()
    a, b = Step("a", log, value=1), Step("b", log)
    flow = graph_flow.Flow("g").add(a, b).link(a, b, decider=lambda history: history["a"] == 1)
    eng, _ = load(flow)
    eng.run()
    assert log.events == ["a.execute", "b.execute"]


def test_a_raising_decider_fails_the_guarded_task(load):
    log = Recorder()
    a, b = Step("a", log), Step("b", log)
    flow = graph_flow.Flow("g").add(a, b).link(a, b, decider=lambda history: 1 / 0)
    eng, seen = load(flow)
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    assert info.value.atom_name == "b"
    assert info.value.failure.check(ZeroDivisionError)
    assert seen.of("b") == [states.RUNNING, states.FAILURE, states.REVERTING, states.REVERTED]
    assert log.events == ["a.execute", "b.revert", "a.revert"]


def test_ignored_atoms_run_again_when_their_subflow_is_retried(load):
    decisions = iter([False, True])
    log = Recorder()
    first = Step("first", log)
    maybe = Step("maybe", log)
    graph = graph_flow.Flow("g").add(first, maybe)
    graph.link(first, maybe, decider=lambda history: next(decisions))

    @task
    def verify(attempt):
        if attempt == 1:
            raise RuntimeError("first attempt is never good enough")

    body = linear_flow.Flow("body", retry=retry.Times(2, provides="attempt")).add(graph, verify)
    eng, seen = load(body)
    eng.run()
    assert seen.of("maybe") == [states.IGNORE, states.PENDING, states.RUNNING, states.SUCCESS]
    assert log.events.count("maybe.execute") == 1


def test_retry_policy_and_controller_transitions_are_legal(load):
    flaky = Flaky("flaky", 1, retry_policy=retry.RetryPolicy(attempts=2))
    eng, seen = load(linear_flow.Flow("f", retry=retry.Times(1)).add(flaky))
    eng.run()
    assert seen.illegal() == []
    assert states.RETRYING in seen.of("flaky")
