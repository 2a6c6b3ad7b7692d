"""What a running task may use: progress reports, cooperative cancel, start guards, TaskResult."""

from __future__ import annotations

import threading

import pytest

from conductor import context, engines, states
from conductor.context import JobContext
from conductor.exceptions import Cancelled, TaskCancelled
from conductor.patterns import linear_flow
from conductor.records import ExecutionInfo, TaskResult
from conductor.storage import MemoryProgress
from conductor.task import Task

from .helpers import Recorder, Step


class Cooperative(Task):
    """Waits (bounded) until told to stop, then stops the way the pattern says."""

    def __init__(self, name: str, log: Recorder, started: threading.Event) -> None:
        super().__init__(name)
        self.log, self.started = log, started

    def execute(self) -> str:
        ctx = context.current()
        ctx.on_cancel(lambda reason: self.log.add(f"on_cancel:{reason}"))
        self.started.set()
        stopped = threading.Event()
        ctx.on_cancel(lambda reason: stopped.set())
        assert stopped.wait(10), "nobody stopped the task"
        self.log.add(f"{self.name}.stopping:{ctx.cancel_reason}")
        context.check_cancelled()
        return "unreachable"

    def revert(self, **kwargs: object) -> None:
        self.log.add(f"{self.name}.revert")


def _run_in_thread(eng) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            eng.run()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_a_cancel_reaches_the_running_task_which_stops_and_is_reverted(engine_name):
    log, started = Recorder(), threading.Event()
    flow = linear_flow.Flow("f").add(Step("a", log), Cooperative("wait", log, started), Step("c", log))
    eng = engines.load(flow, engine=engine_name, context={"job_id": "j"})
    thread, errors = _run_in_thread(eng)
    assert started.wait(10)
    eng.cancel("operator asked")
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)
    assert "on_cancel:cancelled" in log.events and "wait.stopping:cancelled" in log.events
    assert "a.revert" in log.events and "c.execute" not in log.events
    assert eng.storage.get_flow_state() == states.REVERTED


def test_a_task_stopping_for_a_shutdown_is_not_saved_and_runs_again_on_resume(engine_name):
    log, started = Recorder(), threading.Event()
    progress = MemoryProgress()
    job = JobContext({"job_id": "j"})
    flow = linear_flow.Flow("f").add(Step("a", log), Cooperative("wait", log, started))
    eng = engines.load(flow, engine=engine_name, progress=progress, context=job)
    thread, errors = _run_in_thread(eng)
    assert started.wait(10)
    job.signal_cancel("shutdown")
    eng.suspend()
    thread.join(10)
    assert errors == []
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert eng.storage.get_atom_state("wait") == states.PENDING
    assert progress.saves == [("a", states.SUCCESS)]

    # A new owner resumes: "a" is not run again, "wait" is.
    class Quick(Task):
        def execute(self) -> str:
            log.add("wait.again")
            return "ok"

    resumed = engines.load(
        linear_flow.Flow("f").add(Step("a", log), Quick("wait")), engine=engine_name,
        progress=progress,
    )
    resumed.run()
    assert resumed.storage.get_flow_state() == states.SUCCESS
    assert log.events.count("a.execute") == 1 and "wait.again" in log.events


def test_a_start_guard_refuses_a_task_and_the_engine_suspends_before_it(engine_name):
    log = Recorder()
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log))
    eng = engines.load(flow, engine=engine_name)
    asked: list[str] = []

    def guard(name: str) -> bool:
        asked.append(name)
        return name != "b"

    eng.add_start_guard(guard)
    eng.run()
    assert asked == ["a", "b"] and log.events == ["a.execute"]
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert eng.storage.get_atom_state("b") == states.PENDING
    eng.remove_start_guard(guard)
    eng.run()
    assert log.events == ["a.execute", "b.execute"]
    assert eng.storage.get_flow_state() == states.SUCCESS


class Reporting(Task):
    def execute(self) -> None:
        for n in range(1, 4):
            context.progress(n / 3, f"step {n}", step=n)


def test_progress_reports_are_validated_and_the_latest_is_kept(engine_name):
    eng = engines.load(linear_flow.Flow("f").add(Reporting("r")), engine=engine_name)
    eng.run()
    report = eng.context.progress_reports["r"]
    assert report == {"fraction": 1.0, "message": "step 3", "details": {"step": 3}}


@pytest.mark.parametrize(
    "args, kwargs, field",
    [
        ((1.5,), {}, "'fraction'"),
        ((float("nan"),), {}, "'fraction'"),
        ((True,), {}, "'fraction'"),
        ((0.5, 7), {}, "'message'"),
        ((0.5,), {"blob": object()}, "'details'"),
        ((0.5,), {"blob": "x" * 5000}, "'details'"),
    ],
)
def test_bad_progress_names_the_field_and_the_task(args, kwargs, field):
    class Bad(Task):
        def execute(self) -> None:
            context.progress(*args, **kwargs)

    eng = engines.load(linear_flow.Flow("f").add(Bad("bad")))
    with pytest.raises(Exception) as info:
        eng.run()
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert field in str(cause) and "'bad'" in str(cause)


def test_outside_a_task_the_context_is_inert():
    context.progress(0.5, "nothing to report to")
    context.on_cancel(lambda reason: pytest.fail("never called"))
    assert context.cancelled() is False
    context.check_cancelled()
    assert context.current_task() is None


def test_check_cancelled_raises_with_the_reason():
    job = JobContext({"job_id": "j"})
    job.check_cancelled()
    assert job.signal_cancel("claim lost") and not job.signal_cancel("shutdown")
    with pytest.raises(TaskCancelled) as info:
        job.check_cancelled()
    assert info.value.reason == "claim lost"
    late: list[str] = []
    job.on_cancel(late.append)  # already stopped: called at once
    assert late == ["claim lost"]


def test_a_task_may_return_its_value_with_its_own_execution_record(engine_name):
    remote = ExecutionInfo("worker-7", 1000.0, 1003.0, task_start_time=1001.0, task_end_time=1002.5)

    class Remote(Task):
        def execute(self) -> TaskResult[int]:
            return TaskResult(42, remote)

    progress = MemoryProgress()
    eng = engines.load(
        linear_flow.Flow("f").add(Remote("remote", provides="answer")),
        engine=engine_name,
        progress=progress,
    )
    eng.run()
    assert eng.storage.fetch("answer") == 42
    info = eng.storage.get_execution("remote").execution
    assert (info.hostname, info.task_start_time, info.task_end_time) == ("worker-7", 1001.0, 1002.5)
    assert info.input_transform_start_time > 0  # filled from the engine's own clock
    assert eng.storage.get_task_result("remote") == TaskResult(42, info)
    saved = progress.records["remote"]
    assert saved["result"] == 42 and saved["execution"]["execution"]["hostname"] == "worker-7"
