"""The admin tool's records and text helpers, in process."""

from __future__ import annotations

import pytest

from jobboard import Entity, Job, JobState
from jobboard.admin import render
from jobboard.admin.cli import parse_duration
from tests.admin.helpers import OWNER, assert_fits


def test_show_reads_the_records_the_engine_saves(memory_board):
    records = pytest.importorskip("conductor.records")
    failure = pytest.importorskip("conductor.failure")
    try:
        raise KeyError("missing pixel")
    except KeyError as err:
        failed = failure.Failure.from_exception(err)
    info = records.TaskInfo(
        task_id="u1",
        name="resize",
        parent_task_ids=[],
        submit_time=100.0,
        received_time=101.0,
        success=False,
        exception=records.ExceptionInfo("KeyError", "'missing pixel'", "tb"),
        execution=records.ExecutionInfo(
            "host-z", 100.1, 100.9, 100.1, 100.2, 100.2, 100.7, 100.7, 100.8
        ),
    )
    saved = {
        "state": "FAILURE",
        "result": None,
        "failure": failed.to_dict(),
        "execution": info.to_dict(),
        "metadata": {"conductor": "c1", "owner": OWNER, "token": 1},
    }
    job = memory_board.post("engine-job", "images")
    claim = memory_board.claim(job, OWNER, lease=300)
    memory_board.save_progress(claim, OWNER, claim.token, "resize", saved)

    (task,) = render.progress_records(memory_board.load_progress(job))
    (exported,) = render.export_records(memory_board.get(job), memory_board.load_progress(job))

    assert task["host"] == "host-z" and task["start"] == 100.1 and task["success"] is False
    assert task["durations"]["task"] == pytest.approx(0.5)
    assert task["durations"]["total"] == pytest.approx(0.8)
    assert task["error"].startswith("KeyError") and "missing pixel" in task["error"]
    assert exported["conductor"] == OWNER and exported["submit_time"] == 100.0
    assert exported["received_time"] == 101.0 and exported["task_end_time"] == 100.7


def test_table_fits_the_width_and_keeps_fixed_columns():
    rows = [("a" * 32, "x" * 60, "y" * 40, 12345)]

    text = render.table(("ID", "NAME", "OWNER", "N"), rows, width=80, fixed=(0, 3), right=(3,))

    assert_fits(text)
    assert "a" * 32 in text and render.ELLIPSIS in text and text.splitlines()[1].endswith("12345")


@pytest.mark.parametrize(
    "seconds,text",
    [(None, "-"), (0.045, "45ms"), (12.34, "12.3s"), (185, "3m05s"), (7380, "2h03m"),
     (100800, "1d04h"), (-2.5, "-2.5s")],
)  # fmt: skip
def test_fmt_duration(seconds, text):
    assert render.fmt_duration(seconds) == text


@pytest.mark.parametrize(
    "text,seconds",
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
     ("250ms", 0.25), ("2w", 1209600)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "h", "-5s", "1d 2h", "nan"])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(Exception, match="invalid duration"):
        parse_duration(text)


def test_task_record_tolerates_missing_and_nested_keys():
    empty = render.task_record("t", {})
    nested = render.task_record(
        "n",
        {
            "execution": {
                "submit_time": 10.0,
                "success": True,
                "execution": {"hostname": "h", "task_start_time": 11.0, "task_end_time": 11.5},
            },
            "failure": "boom",
        },
    )
    odd = render.task_record("o", {"execution": "not a dict", "metadata": None, "state": 3})
    unreached = render.task_record(
        "u", {"execution": {"task_start_time": 5.0, "task_end_time": 0.0, "hostname": "h"}}
    )

    assert empty["host"] is None and empty["execution"] is None and empty["error"] is None
    assert set(empty["durations"]) == {"input_transform", "task", "result_transform", "total"}
    assert nested["host"] == "h" and nested["durations"]["task"] == 0.5 and nested["start"] == 11.0
    assert nested["error"] == "boom" and nested["success"] is True
    assert odd["execution"] is None and odd["conductor"] is None
    assert unreached["durations"]["task"] is None  # 0.0: the phase never ended


@pytest.mark.parametrize(
    "value,text",
    [
        (None, None),
        ("plain", "plain"),
        ({"exc_type_names": ["KeyError"], "exception_str": "'x'"}, "KeyError: 'x'"),
        (
            {"type": "ValueError", "message": "ValueError: already named"},
            "ValueError: already named",
        ),
        ({"code": 7}, '{"code":7}'),
    ],
)
def test_error_text(value, text):
    assert render.error_text(value) == text


def test_claim_record_flags_an_expired_lease_and_unknown_owner():
    now = 1000.0
    job = Job(
        id="j" * 32, name="n", flow="f", store={}, state=JobState.CLAIMED, owner="c2@h:1:x",
        token=3, claimed_at=now - 7200, lease_expires_at=now - 1,
    )  # fmt: skip
    known = [Entity("c2", "conductor", {}, now)]

    flagged = render.claim_record(job, now, [], long_after=3600)
    by_name = render.claim_record(job, now, known, long_after=10**6)

    assert flagged["flags"] == ["expired", "unknown-owner", "long"] and flagged["lease_left"] == -1
    assert by_name["flags"] == ["expired"]
    assert "expired" in render.render_claims([flagged])
