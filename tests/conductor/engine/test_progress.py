"""Progress persistence: records saved per finished atom, resume, and save failures."""

from __future__ import annotations

import json

import pytest

from conductor import engines, retry, states
from conductor.exceptions import ExecutionFailure, ResultNotSerializable
from conductor.failure import Failure
from conductor.patterns import linear_flow
from conductor.records import TaskInfo
from conductor.storage import MemoryProgress, ProgressBackend
from conductor.task import Task

from .helpers import Boom, Flaky, Recorder, Step


class Stale(Exception):
    """What a board raises for a write with an old fencing token."""


class RejectingProgress(MemoryProgress):
    """Accepts ``accept`` saves, then raises the same ``Stale`` object for every other."""

    def __init__(self, accept: int):
        super().__init__()
        self.accept = accept
        self.error = Stale("token 3 is older than 4")

    def save(self, atom_name, record):
        if len(self.saves) >= self.accept:
            raise self.error
        super().save(atom_name, record)


def test_memory_progress_is_a_progress_backend():
    assert isinstance(MemoryProgress(), ProgressBackend)


def test_each_finished_atom_is_saved_as_json(load):
    log = Recorder()
    progress = MemoryProgress()
    eng, _ = load(
        linear_flow.Flow("f").add(Step("a", log, value={"n": 1}), Boom("b", log)),
        progress=progress,
    )
    with pytest.raises(ExecutionFailure):
        eng.run()
    assert progress.saves == [
        ("a", states.SUCCESS),
        ("b", states.FAILURE),
        ("b", states.REVERTED),
        ("a", states.REVERTED),
    ]
    records = progress.records
    assert set(records["a"]) == {"state", "result", "failure", "execution", "metadata"}
    assert records["a"]["state"] == states.REVERTED
    assert records["a"]["result"] is None
    execution = TaskInfo.from_dict(records["a"]["execution"])
    assert execution.name == "a" and execution.success is True
    assert execution.task_id == eng.storage.get_atom_uuid("a")


def test_a_success_record_holds_result_execution_and_metadata(load):
    progress = MemoryProgress()
    log = Recorder()
    eng, _ = load(linear_flow.Flow("f").add(Step("a", log, value=[1, 2])), progress=progress)
    eng.atom_notifier.register(
        states.SUCCESS,
        lambda state, details: eng.storage.update_atom_metadata("a", {"note": "x"}),
    )
    eng.run()
    record = progress.records["a"]
    assert record["state"] == states.SUCCESS
    assert record["result"] == [1, 2]
    assert record["failure"] is None
    assert record["metadata"] == {"note": "x"}
    assert record["execution"]["execution"]["hostname"]
    assert record == json.loads(json.dumps(eng.storage.get_atom_record("a")))


def test_failure_records_carry_the_failure_dict(load):
    progress = MemoryProgress()
    eng, _ = load(linear_flow.Flow("f").add(Boom("b", Recorder())), progress=progress)
    saved = []
    eng.atom_notifier.register(
        states.REVERTING, lambda state, details: saved.append(progress.records["b"])
    )
    with pytest.raises(ExecutionFailure):
        eng.run()
    failure = Failure.from_dict(saved[0]["failure"])
    assert saved[0]["state"] == states.FAILURE
    assert failure.exception_str == "boom" and failure.check(ValueError)
    assert saved[0]["execution"]["exception"]["type"] == "ValueError"
    assert saved[0]["execution"]["success"] is False


def test_resume_skips_atoms_saved_as_success(load):
    # Given a job whose first owner finished "a" and "b" (result saved)
    log = Recorder()
    first = MemoryProgress()
    eng, _ = load(
        linear_flow.Flow("f").add(Step("a", log, value=1, provides="x"), Step("b", log)),
        progress=first,
    )
    eng.run()
    saved = first.records
    saved.pop("b")  # pretend "b" was running when the owner died

    # When another conductor loads the job with that progress
    log2 = Recorder()

    class Use(Task):
        def execute(self, x):
            log2.add(f"use {x}")
            return x + 1

    progress = MemoryProgress(saved)
    flow = linear_flow.Flow("f").add(
        Step("a", log2, value=99, provides="x"), Step("b", log2), Use(provides="y")
    )
    eng2, seen = load(flow, progress=progress)
    eng2.run()

    # Then "a" is not run again and its saved result feeds the rest
    assert log2.events == ["b.execute", "use 1"]
    assert eng2.storage.fetch("y") == 2
    assert seen.of("f") == [states.RESUMING, states.RUNNING, states.SUCCESS]
    assert seen.of("a") == []
    assert eng2.storage.get_atom_uuid("a") == eng.storage.get_atom_uuid("a")
    assert eng2.storage.get_execution("a").name == "a"
    assert [name for name, _ in progress.saves] == ["b", "Use"]


def test_non_json_results_fail_the_task_by_name(load):
    log = Recorder()
    flow = linear_flow.Flow("f").add(Step("a", log), Step("sets", log, value={1, 2}))
    eng, _ = load(flow, progress=MemoryProgress())
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    assert info.value.atom_name == "sets"
    assert isinstance(info.value.__cause__, ResultNotSerializable)
    assert "task 'sets' returned a result that cannot be saved as JSON" in str(info.value)
    assert log.events == ["a.execute", "sets.execute", "sets.revert", "a.revert"]

    # without a progress backend any result is fine, unless asked otherwise
    assert engines.run(linear_flow.Flow("g").add(Step("s", log, value={1}, provides="v")))["v"] == {
        1
    }
    eng = engines.load(
        linear_flow.Flow("h").add(Step("s", log, value=float("nan"))), json_results=True
    )
    with pytest.raises(ExecutionFailure, match="cannot be saved as JSON"):
        eng.run()


def test_a_failing_save_stops_without_reverting_and_propagates(load):
    # Given a backend that rejects the second save (a stale fencing token)
    log = Recorder()
    progress = RejectingProgress(accept=1)
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log), Step("c", log))
    eng, seen = load(flow, progress=progress)
    # When the engine runs
    with pytest.raises(Stale) as info:
        eng.run()
    # Then the very same exception leaves run(), nothing is reverted or run further
    assert info.value is progress.error
    assert log.events == ["a.execute", "b.execute"]
    assert progress.saves == [("a", states.SUCCESS)]
    assert eng.storage.get_atom_state("c") == states.PENDING
    assert seen.of("f") == [states.RUNNING, states.FAILURE]
    assert all(new != states.REVERTING for *_, new in seen.values)


def test_a_failing_save_during_revert_stops_reverting(load):
    log = Recorder()
    progress = RejectingProgress(accept=2)
    flow = linear_flow.Flow("f").add(Step("a", log), Boom("b", log))
    eng, _ = load(flow, progress=progress)
    with pytest.raises(Stale) as info:
        eng.run()
    assert info.value is progress.error
    assert log.events == ["a.execute", "b.execute", "b.revert"]
    assert eng.storage.get_flow_state() == states.FAILURE


def test_suspended_job_resumes_on_a_new_engine(load):
    # Given an engine suspended by a listener after "a" finished
    log = Recorder()
    progress = MemoryProgress()
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log))
    eng, seen = load(flow, progress=progress)
    eng.atom_notifier.register(states.SUCCESS, lambda state, details: eng.suspend())
    eng.run()
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert seen.of("f") == [states.RUNNING, states.SUSPENDING, states.SUSPENDED]
    assert log.events == ["a.execute"]
    # When a new engine loads the same progress
    log2 = Recorder()
    eng2, _ = load(linear_flow.Flow("f").add(Step("a", log2), Step("b", log2)), progress=progress)
    eng2.run()
    # Then only the unfinished task runs
    assert log2.events == ["b.execute"]
    assert eng2.storage.get_flow_state() == states.SUCCESS


def test_retry_history_is_saved_and_restored(load):
    progress = MemoryProgress()
    flaky = Flaky("flaky", failures=1)
    flow = linear_flow.Flow("f", retry=retry.Times(3, provides="n")).add(flaky)
    eng, _ = load(flow, progress=progress)
    eng.run()
    history = progress.records["Times"]["metadata"]["retry_history"]
    assert [value for value, _ in history] == [1, 2]
    assert history[0][1]["flaky"]["exception_str"] == "attempt 1 failed"

    eng2, _ = load(
        linear_flow.Flow("f", retry=retry.Times(3, provides="n")).add(Flaky("flaky", 0)),
        progress=progress,
    )
    assert eng2.storage.get_retry_history("Times").values() == [1, 2]
    assert eng2.storage.get_atom_state("flaky") == states.SUCCESS
    assert "retry_history" not in eng2.storage.get_atom_metadata("Times")
