"""Every listener's output, registration, and error isolation."""

from __future__ import annotations

import logging

import pytest

from conductor import engines, retry, states
from conductor.exceptions import ExecutionFailure
from conductor.formatters import FailureFormatter
from conductor.listeners.base import Listener
from conductor.listeners.capturing import CaptureListener
from conductor.listeners.claims import CheckingClaimListener
from conductor.listeners.logging import DynamicLoggingListener, LoggingListener
from conductor.listeners.printing import PrintingListener
from conductor.listeners.timing import (
    DurationListener,
    EventTimeListener,
    PrintingDurationListener,
)
from conductor.patterns import linear_flow
from conductor.storage import MemoryProgress
from conductor.task import Task

from .helpers import Boom, Flaky, Recorder, Step, mask


class Double(Task):
    def execute(self, x):
        return 2 * x


def _ok_engine(**options):
    flow = linear_flow.Flow("f").add(Double(provides="y"))
    return engines.load(flow, {"x": 2}, **options)


def _failing_engine():
    return engines.load(linear_flow.Flow("f").add(Boom("bad", Recorder())))


def test_printing_listener_to_stderr_with_failure_traceback(capsys):
    eng = _failing_engine()
    with PrintingListener(eng, stderr=True):
        with pytest.raises(ExecutionFailure):
            eng.run()
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = mask(captured.err).splitlines()
    engine = "<conductor.engines.action_engine.engine.SerialActionEngine object at ...>"
    assert lines[2] == (
        f"{engine} has moved task 'bad' (...) into state 'FAILURE' from state 'RUNNING' "
        "with result 'Failure: ValueError: boom' (failure=True)"
    )
    assert lines[3] == "Traceback (most recent call last):"
    assert "ValueError: boom" in captured.err.split("(failure=True)")[1]
    assert lines[-1].endswith("into state 'REVERTED' from state 'REVERTING'")


def test_printing_listener_reports_retries(capsys):
    flow = linear_flow.Flow("f", retry=retry.Times(2)).add(Flaky("flaky", 1))
    eng = engines.load(flow)
    with PrintingListener(eng, task_listen_for=(), flow_listen_for=()):
        eng.run()
    out = mask(capsys.readouterr().out).splitlines()
    assert [line.split(" has moved ")[1] for line in out] == [
        "retry 'Times' (...) into state 'RUNNING' from state 'PENDING'",
        "retry 'Times' (...) into state 'SUCCESS' from state 'RUNNING' with result '1' (failure=False)",
        "retry 'Times' (...) into state 'RETRYING' from state 'SUCCESS'",
        "retry 'Times' (...) into state 'RUNNING' from state 'RETRYING'",
        "retry 'Times' (...) into state 'SUCCESS' from state 'RUNNING' with result '2' (failure=False)",
    ]


def test_logging_listener_logs_every_transition(caplog):
    logger = logging.getLogger("tests.engine.custom")
    eng = _ok_engine()
    with caplog.at_level(logging.INFO, logger="tests.engine.custom"):
        with LoggingListener(eng, log=logger, level=logging.INFO):
            eng.run()
    messages = [mask(r.getMessage()) for r in caplog.records if r.name == logger.name]
    assert len(messages) == 4
    assert messages[2].endswith(
        "has moved task 'Double' (...) into state 'SUCCESS' from state 'RUNNING' "
        "with result '4' (failure=False)"
    )
    assert {r.levelno for r in caplog.records if r.name == logger.name} == {logging.INFO}


def test_logging_listener_defaults_to_its_module_logger_at_debug(caplog):
    eng = _ok_engine()
    with caplog.at_level(logging.DEBUG, logger="conductor.listeners.logging"):
        with LoggingListener(eng):
            eng.run()
    records = [r for r in caplog.records if r.name == "conductor.listeners.logging"]
    assert len(records) == 4 and all(r.levelno == logging.DEBUG for r in records)


def test_dynamic_logging_listener_levels_and_failure_details(caplog):
    eng = _failing_engine()
    with caplog.at_level(logging.DEBUG, logger="conductor.listeners.logging"):
        with DynamicLoggingListener(eng):
            with pytest.raises(ExecutionFailure):
                eng.run()
    records = [
        (r.levelno, mask(r.getMessage()), r.exc_info)
        for r in caplog.records
        if r.name == "conductor.listeners.logging"
    ]
    levels = [(level, msg.split("\n")[0]) for level, msg, _ in records]
    assert levels == [
        (logging.DEBUG, "Flow 'f' (...) went from PENDING to RUNNING"),
        (logging.DEBUG, "Task 'bad' (...) went from PENDING to RUNNING"),
        (logging.WARNING, "Task 'bad' (...) went from RUNNING to FAILURE with a failure"),
        (logging.DEBUG, "Flow 'f' (...) went from RUNNING to REVERTING"),
        (logging.WARNING, "Task 'bad' (...) went from FAILURE to REVERTING"),
        (logging.DEBUG, "Task 'bad' (...) went from REVERTING to REVERTED with result None"),
        (logging.WARNING, "Flow 'f' (...) went from REVERTING to REVERTED"),
    ]
    failure_message, exc_info = records[2][1], records[2][2]
    assert "Failure: ValueError: boom" in failure_message
    assert "Atom 'bad' (FAILURE)" in failure_message
    assert exc_info[0] is ValueError


def test_dynamic_logging_listener_hides_results_and_honours_levels(caplog):
    eng = _ok_engine()
    with caplog.at_level(logging.DEBUG, logger="conductor.listeners.logging"):
        with DynamicLoggingListener(eng, level=logging.INFO, hide_inputs_outputs_of=["Double"]):
            eng.run()
    messages = [r.getMessage() for r in caplog.records if r.name == "conductor.listeners.logging"]
    assert all("result" not in m for m in messages)
    assert {r.levelno for r in caplog.records if r.name == "conductor.listeners.logging"} == {
        logging.INFO
    }


def test_failure_formatter_shows_inputs_providers_and_hides_secrets():
    class Login(Task):
        def execute(self, password):
            return "session-1"

    class Use(Task):
        def execute(self, session, password):
            raise PermissionError("denied")

    flow = linear_flow.Flow("f").add(Login(provides="session"), Use())
    eng = engines.load(flow, {"password": "hunter2"})
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    formatter = FailureFormatter(eng, hide_inputs_outputs_of=["Use", "Login"])
    exc_info, text = formatter.format(info.value.failure, "Use".__eq__)
    assert exc_info[0] is PermissionError
    assert text.splitlines() == [
        "Failure: PermissionError: denied",
        "Atom 'Use' (REVERTED)",
        "  inputs: <hidden>",
        "  provided by 'Login' (REVERTED): <hidden>",
    ]
    assert "hunter2" not in text
    open_text = FailureFormatter(eng).format(info.value.failure, "Use".__eq__)[1]
    assert "inputs: {'session': 'session-1', 'password': 'hunter2'}" in open_text


def test_failure_formatter_appends_saved_traceback_when_exception_is_gone():
    from conductor.failure import Failure

    eng = _failing_engine()
    with pytest.raises(ExecutionFailure) as info:
        eng.run()
    restored = Failure.from_dict(info.value.failure.to_dict())
    exc_info, text = FailureFormatter(eng).format(restored, lambda name: False)
    assert exc_info is None
    assert text.startswith("Failure: ValueError: boom\nTraceback (most recent call last):")


def test_duration_listener_stores_durations_saved_with_progress():
    progress = MemoryProgress()
    eng = _ok_engine(progress=progress)
    with DurationListener(eng):
        eng.run()
    duration = eng.storage.get_atom_metadata("Double")["duration"]
    assert 0 <= duration < 5
    assert progress.records["Double"]["metadata"]["duration"] == duration
    assert 0 <= eng.storage.get_flow_metadata()["duration"] < 5


def test_duration_listener_times_reverts_too():
    eng = _failing_engine()
    with DurationListener(eng):
        with pytest.raises(ExecutionFailure):
            eng.run()
    assert "duration" in eng.storage.get_atom_metadata("bad")


def test_printing_duration_listener_prints_each_duration():
    printed = []
    eng = _ok_engine()
    with PrintingDurationListener(eng, printer=printed.append):
        eng.run()
    assert len(printed) == 2
    assert printed[0].startswith("task 'Double' finished in 0.")
    assert printed[1].startswith("flow 'f' finished in ")


def test_event_time_listener_stores_a_timestamp_per_event():
    eng = _ok_engine()
    with EventTimeListener(eng):
        eng.run()
    atom = eng.storage.get_atom_metadata("Double")
    assert sorted(atom) == ["RUNNING-timestamp", "SUCCESS-timestamp"]
    assert atom["RUNNING-timestamp"] <= atom["SUCCESS-timestamp"]
    assert sorted(eng.storage.get_flow_metadata()) == ["RUNNING-timestamp", "SUCCESS-timestamp"]


def test_capture_listener_values_and_skips():
    log = Recorder()
    flow = linear_flow.Flow("f", retry=retry.Times(1)).add(Step("a", log), Step("b", log))
    eng = engines.load(flow)
    existing = ["earlier"]
    with CaptureListener(eng, skip_tasks=["b"], capture_retry=False, values=existing) as capture:
        eng.run()
    assert capture.values is existing
    assert [(kind, state) for kind, state, _ in existing[1:]] == [
        ("flow", states.RUNNING),
        ("task", states.RUNNING),
        ("task", states.SUCCESS),
        ("flow", states.SUCCESS),
    ]
    details = existing[3][2]
    assert details["task_name"] == "a" and details["result"] == "a"
    assert details["old_state"] == states.RUNNING and details["flow_name"] == "f"

    eng = engines.load(linear_flow.Flow("g").add(Step("c", log)))
    with CaptureListener(eng, capture_task=False, skip_flows=["g"]) as capture:
        eng.run()
    assert capture.values == []
    assert len(eng.notifier) == 0 and len(eng.atom_notifier) == 0


class _Board:
    def __init__(self, owner):
        self.owner = owner
        self.calls = 0

    def find_owner(self, job):
        self.calls += 1
        return self.owner


def test_claim_listener_checks_every_transition_and_suspends_on_loss(caplog):
    log = Recorder()
    board = _Board("me")
    flow = linear_flow.Flow("f").add(Step("a", log), Step("b", log))
    eng = engines.load(flow)

    def steal(state, details):
        if details["task_name"] == "a":
            board.owner = "someone-else"

    eng.atom_notifier.register(states.SUCCESS, steal)
    with caplog.at_level(logging.WARNING, logger="conductor.listeners.claims"):
        with CheckingClaimListener(eng, "job-1", board, "me"):
            eng.run()
    assert log.events == ["a.execute"]
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert board.calls >= 3
    assert any("job-1 is no longer claimed by me" in r.getMessage() for r in caplog.records)


def test_claim_listener_custom_handler_and_check():
    calls = []
    eng = _ok_engine()
    listener = CheckingClaimListener(
        eng, "job", _Board("other"), "me", on_job_loss=lambda *args: calls.append(args)
    )
    with listener:
        eng.run()
    # A handler that does not stop the engine is told once; no task starts anyway.
    assert eng.storage.get_flow_state() == states.SUSPENDED
    assert [state for _, state, _ in calls] == ["RUNNING"]
    assert all(engine is eng for engine, _, _ in calls)
    assert eng.storage.get_atom_state("Double") == states.PENDING

    class LocalCheck(CheckingClaimListener):
        def _claim_lost(self, state, details):
            return state == states.SUCCESS

    eng = _ok_engine()
    with LocalCheck(eng, "job", board=None, owner="me"):
        eng.run()
    # the flow suspended when Double succeeded, which was its last task
    assert eng.storage.get_flow_state() == states.SUCCESS
    assert eng.storage.fetch("y") == 4


def test_a_raising_listener_is_logged_and_never_breaks_the_run(caplog):
    class Broken(Listener):
        def _task_receiver(self, state, details):
            raise RuntimeError("listener bug")

    eng = _ok_engine()
    with caplog.at_level(logging.WARNING, logger="conductor.types.notifier"):
        with Broken(eng):
            eng.run()
    assert eng.storage.fetch("y") == 4
    failures = [r for r in caplog.records if "failed on event" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info[0] is RuntimeError


def test_listeners_register_only_what_they_override():
    class FlowOnly(Listener):
        def _flow_receiver(self, state, details):
            pass

    eng = _ok_engine()
    listener = FlowOnly(eng, flow_listen_for=(states.SUCCESS, states.FAILURE))
    listener.register()
    listener.register()  # idempotent
    assert len(eng.notifier) == 2 and len(eng.atom_notifier) == 0
    listener.deregister()
    assert len(eng.notifier) == 0
