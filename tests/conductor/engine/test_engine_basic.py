"""Running flows to success: patterns, argument binding, storage, validation at load."""

from __future__ import annotations

import os
import uuid

import pytest

from conductor import engines, states
from conductor.exceptions import (
    DependencyCycle,
    DuplicateAtomNames,
    InvalidFlow,
    InvalidState,
    MissingDependencies,
    NotFound,
)
from conductor.patterns import graph_flow, linear_flow, unordered_flow
from conductor.task import Task

from .helpers import Recorder, Step


class Add(Task):
    def execute(self, x, y):
        return x + y


class Pair(Task):
    default_provides = ("low", "high")

    def execute(self, x):
        return (x - 1, x + 1)


class Named(Task):
    def execute(self, x):
        return {"double": 2 * x, "square": x * x}


class Optional(Task):
    def execute(self, x, scale=10):
        return x * scale


class Kwargs(Task):
    def execute(self, **kwargs):
        return sorted(kwargs.items())


def test_linear_flow_runs_in_order_and_binds_outputs(load):
    flow = linear_flow.Flow("sum").add(
        Add(name="first", provides="z"),
        Add(name="second", rebind={"x": "z"}, provides="total"),
    )
    eng, seen = load(flow, {"x": 1, "y": 2})
    eng.run()
    assert eng.storage.fetch("total") == 5
    assert eng.storage.get("first") == 3
    assert eng.storage.get_flow_state() == states.SUCCESS
    assert seen.of("cat") == []
    assert seen.of("sum") == [states.RUNNING, states.SUCCESS]
    assert seen.of("first") == [states.RUNNING, states.SUCCESS]


def test_run_helper_returns_every_named_value(engine_name):
    flow = linear_flow.Flow("f").add(Pair(), Named(rebind=["high"], provides=("double", "square")))
    values = engines.run(flow, {"x": 3}, engine=engine_name)
    assert values == {"x": 3, "low": 2, "high": 4, "double": 8, "square": 16}


def test_rebind_list_inject_requires_and_optional_defaults(load):
    flow = linear_flow.Flow("f").add(
        Optional(name="default_scale", provides="a"),
        Optional(name="injected", inject={"scale": 3}, provides="b"),
        Optional(name="stored_scale", rebind=["a", "s"], provides="c"),
        Kwargs(name="kw", requires=["a", "b"], provides="d"),
    )
    eng, _ = load(flow, {"x": 2, "s": 5})
    eng.run()
    assert eng.storage.fetch_all() == {
        "x": 2,
        "s": 5,
        "a": 20,
        "b": 6,
        "c": 100,
        "d": [("a", 20), ("b", 6)],
    }


def test_latest_provider_wins_and_store_is_fallback(load):
    flow = linear_flow.Flow("f").add(
        Add(name="one", provides="x"),
        Add(name="two", provides="x"),
    )
    eng, _ = load(flow, {"x": 1, "y": 1})
    eng.run()
    # "two" read x=2 from "one" (not the store's 1); fetch gives the latest provider.
    assert eng.storage.get("two") == 3
    assert eng.storage.fetch("x") == 3


def test_unordered_flow_runs_every_child(load):
    log = Recorder()
    flow = unordered_flow.Flow("u").add(Step("a", log), Step("b", log), Step("c", log))
    eng, _ = load(flow)
    eng.run()
    assert sorted(log.events) == ["a.execute", "b.execute", "c.execute"]


def test_graph_flow_orders_by_data_and_links(load):
    log = Recorder()

    class Produce(Task):
        def execute(self):
            log.add("produce")
            return 7

    class Consume(Task):
        def execute(self, v):
            log.add("consume")
            return v + 1

    flow = graph_flow.Flow("g")
    consume = Consume(provides="w")
    produce = Produce(provides="v")
    last = Step("last", log)
    flow.add(last, consume, produce)  # added in the "wrong" order
    flow.link(consume, last)
    eng, _ = load(flow)
    eng.run()
    assert log.events == ["produce", "consume", "last.execute"]
    assert eng.storage.fetch("w") == 8


def test_graph_flow_rejects_cycles_and_ambiguous_providers():
    # a needs y (from b), b needs x (from a): a data cycle.
    a = Add(name="a", provides="x", rebind={"x": "w"})
    b = Add(name="b", provides="y", rebind={"y": "x"})
    flow = graph_flow.Flow("g").add(a, b, Add(name="free", provides="f"))
    with pytest.raises(DependencyCycle) as info:
        engines.load(flow, {"w": 1, "x": 1, "y": 1})
    assert info.value.names == ("a", "b")
    assert "graph flow 'g' has a dependency cycle between 'a', 'b'" in str(info.value)

    c, d = Add(name="c"), Add(name="d")
    linked = graph_flow.Flow("links").add(c, d).link(c, d).link(d, c)
    with pytest.raises(DependencyCycle, match="'c', 'd'"):
        engines.load(linked, {"x": 1, "y": 1})

    twice = graph_flow.Flow("g2").add(Add(name="p", provides="x"), Add(name="q", provides="x"))
    with pytest.raises(InvalidFlow, match="'x' is provided by both 'p' and 'q'"):
        engines.load(twice, {"x": 1, "y": 1})


def test_nested_flows_see_outer_outputs(load):
    inner = unordered_flow.Flow("inner").add(
        Add(name="left", rebind={"y": "z"}, provides="l"),
        Add(name="right", rebind={"x": "z"}, provides="r"),
    )
    flow = linear_flow.Flow("outer").add(
        Add(name="start", provides="z"), inner, Add(name="end", rebind=["l", "r"], provides="out")
    )
    eng, seen = load(flow, {"x": 1, "y": 2})
    eng.run()
    # z = 3; l = x + z = 4; r = z + y = 5; out = 9
    assert eng.storage.fetch("out") == 9
    order = [name for kind, name, _, new in seen.values if kind == "task" and new == "SUCCESS"]
    assert order[0] == "start" and order[-1] == "end"


def test_duplicate_names_are_rejected_naming_them():
    flow = linear_flow.Flow("f").add(
        Add(name="dup"), unordered_flow.Flow("u").add(Add(name="dup"), Add(name="other"))
    )
    flow.add(Add(name="other"))
    with pytest.raises(DuplicateAtomNames) as info:
        engines.load(flow, {"x": 1, "y": 1})
    assert info.value.names == ("dup", "other")
    assert "'dup', 'other'" in str(info.value)


def test_missing_inputs_are_all_listed_with_their_task():
    flow = linear_flow.Flow("f").add(
        Add(name="a"),
        Add(name="b", rebind={"y": "nowhere"}),
        # unordered siblings cannot feed each other
        unordered_flow.Flow("u").add(
            Add(name="p", provides="q", inject={"y": 0}), Add(name="c", rebind=["q", "x"])
        ),
    )
    with pytest.raises(MissingDependencies) as info:
        engines.load(flow, {"x": 1})
    assert info.value.missing == {"a": ("y",), "b": ("nowhere",), "c": ("q",)}
    message = str(info.value)
    assert "task 'a' needs 'y'" in message
    assert "task 'b' needs 'nowhere'" in message
    assert "task 'c' needs 'q'" in message


def test_engine_options_and_names_are_checked():
    flow = linear_flow.Flow("f").add(Add())
    with pytest.raises(ValueError, match="unknown engine 'turbo'"):
        engines.load(flow, {"x": 1, "y": 1}, engine="turbo")
    with pytest.raises(TypeError, match="max_wrokers"):
        engines.load(flow, {"x": 1, "y": 1}, engine="parallel", max_wrokers=2)
    with pytest.raises(TypeError, match="unknown options"):
        engines.load(flow, {"x": 1, "y": 1}, max_workers=2)
    with pytest.raises(ValueError, match="max_workers"):
        engines.load(flow, {"x": 1, "y": 1}, engine="parallel", max_workers=0)


def test_storage_queries_and_errors(load):
    flow = linear_flow.Flow("f").add(Add(provides="z"))
    eng, _ = load(flow, {"x": 1, "y": 2})
    assert eng.storage.get_atom_state("Add") == states.PENDING
    assert eng.storage.get_execution("Add") is None
    eng.run()
    storage = eng.storage
    assert storage.get_atom_names() == ["Add"]
    assert storage.get_atom_state("Add") == states.SUCCESS
    assert storage.get_atom_inputs("Add") == {"x": 1, "y": 2}
    assert storage.get_atom_uuid("Add") == storage.get_execution("Add").task_id
    assert storage.get_failures() == {}
    storage.update_atom_metadata("Add", {"k": 1})
    assert storage.get_atom_metadata("Add") == {"k": 1}
    storage.inject({"extra": True})
    assert storage.fetch("extra") is True
    with pytest.raises(NotFound, match="no atom named 'nope'"):
        storage.get_atom_state("nope")
    with pytest.raises(NotFound, match="no value named 'nope'"):
        storage.fetch("nope")


def test_a_finished_engine_cannot_run_again(load):
    eng, _ = load(linear_flow.Flow("f").add(Add()), {"x": 1, "y": 1})
    eng.run()
    with pytest.raises(InvalidState, match="already finished"):
        eng.run()


def test_empty_flows_succeed(load):
    flow = linear_flow.Flow("f").add(unordered_flow.Flow("empty"), graph_flow.Flow("g"))
    eng, seen = load(flow)
    eng.run()
    assert seen.of("f") == [states.RUNNING, states.SUCCESS]


def test_declared_outputs_must_be_present(load):
    flow = linear_flow.Flow("f").add(Named(provides=("double", "cube")))
    eng, _ = load(flow, {"x": 2})
    with pytest.raises(Exception) as info:
        eng.run()
    assert "lacks 'cube'" in str(info.value)
    flow = linear_flow.Flow("f").add(Pair(name="scalar", provides=("a", "b"), inject={"x": 1}))
    flow.add(Add(name="bad_shape", provides=("c", "d"), inject={"x": 1, "y": 1}))
    eng, _ = load(flow)
    with pytest.raises(Exception, match="sequence of 2 values, got int"):
        eng.run()


def test_flow_and_atom_uuids_are_random_version_4_uuids_distinct_per_engine():
    def uuids() -> list[str]:
        eng = engines.load(linear_flow.Flow("f").add(Add("a"), Add("b")), {"x": 1, "y": 2})
        storage = eng.storage
        return [storage.flow_uuid, storage.get_atom_uuid("a"), storage.get_atom_uuid("b")]

    seen = uuids() + uuids()
    assert len(set(seen)) == len(seen)
    for text in seen:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    # A forked child (a conductor started by a supervisor that forks) draws other ids.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(uuids()).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split(",")
    os.close(read)
    os.waitpid(pid, 0)
    parent = uuids()
    assert len(child) == 3 and not set(child) & set(parent)
