"""The producers' part of the contract, run against every backend: waiting for a
result, posting once, posting for later, children, and the versioned record store."""

from __future__ import annotations

import math
import threading
import time

import pytest

from jobboard import (
    InvalidJob,
    JobNotFound,
    JobState,
    UnclaimableJob,
    VersionConflict,
    WaitTimeout,
    unique_owner,
)
from tests.helpers import wait_until

#: Bound on how long a pushed wake-up may take in these tests (a hang guard, not a speed figure).
PUSH_BOUND = 20.0


def _finish_later(board, job_id, how, failures):
    """Claim and finish a job from another thread once ``go`` is set."""
    go = threading.Event()

    def run() -> None:
        go.wait(PUSH_BOUND)
        try:
            claim = board.claim(job_id, unique_owner("worker"))
            if how == "consume":
                board.consume(job_id, claim.owner, claim.token, result={"answer": 42})
            elif how == "fail":
                board.fail(job_id, claim.owner, claim.token, error="boom")
            else:
                board.trash(job_id, claim.owner, claim.token, reason="bad input")
        except Exception as err:  # pragma: no cover - reported by the test
            failures.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return go, thread


def _wait_in_thread(board, job, timeout):
    """Run ``board.wait_for`` in a thread; its outcome (a job or an error) lands in a list."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(board.wait_for(job, timeout=timeout))
        except Exception as err:  # pragma: no cover - reported by the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -- waiting for a result -------------------------------------------------------


@pytest.mark.parametrize("how", ["consume", "fail", "trash"])
def test_wait_for_returns_the_finished_job_woken_by_a_push(board_factory, how):
    producer = board_factory()
    worker = board_factory()
    producer.WAIT_FOR_RECHECK = 3600.0  # only a push can wake it in time
    job = producer.post("j", "f", {"x": 1})
    failures: list[Exception] = []
    go, thread = _finish_later(worker, job.id, how, failures)
    waiter, results = _wait_in_thread(producer, job, 60)
    go.set()
    thread.join(PUSH_BOUND)
    assert not failures and not thread.is_alive(), failures
    waiter.join(PUSH_BOUND)
    assert results, "wait_for was not woken by the job finishing"
    done = results[0]
    assert not isinstance(done, Exception), done
    assert done.id == job.id and done.state.finished
    if how == "consume":
        assert done.state is JobState.COMPLETE and done.result == {"answer": 42}
    elif how == "fail":
        assert done.state is JobState.FAILED and done.last_error == "boom"
    else:
        assert done.state is JobState.TRASHED and done.last_error == "bad input"


def test_wait_for_a_cancelled_job_and_an_already_finished_one(board_factory):
    producer = board_factory()
    other = board_factory()
    producer.WAIT_FOR_RECHECK = 3600.0
    job = producer.post("j", "f")
    waiter, results = _wait_in_thread(producer, job.id, 60)
    other.cancel(job)
    waiter.join(PUSH_BOUND)
    assert results, "wait_for was not woken by the cancel"
    assert results[0].state is JobState.CANCELLED
    # Finished already: returned at once, even with a zero timeout.
    assert producer.wait_for(job, timeout=0).state is JobState.CANCELLED


def test_wait_for_times_out_with_the_job_and_bad_input_is_refused(board):
    job = board.post("slow", "f")
    with pytest.raises(WaitTimeout) as info:
        board.wait_for(job, timeout=0.2)
    assert info.value.job.id == job.id and info.value.job.state is JobState.WAITING
    assert job.id in str(info.value)
    with pytest.raises(JobNotFound):
        board.wait_for("no-such-job", timeout=0.1)
    for bad in ("1", math.nan, True):
        with pytest.raises(InvalidJob) as bad_info:
            board.wait_for(job, timeout=bad)
        assert bad_info.value.field == "timeout"
    assert board.get(job).state is JobState.WAITING


# -- posting once -----------------------------------------------------------------


def test_a_key_posts_once_and_changes_nothing_the_second_time(board):
    first = board.post("report", "f", {"day": 1}, key="report-2024-01-01")
    assert first.key == "report-2024-01-01"
    again = board.post("other-name", "g", {"day": 2}, key="report-2024-01-01", priority="high")
    assert again.id == first.id
    assert (again.name, again.flow, again.store) == ("report", "f", {"day": 1})
    assert [j.id for j in board.iterjobs(ensure_fresh=True)] == [first.id]
    assert board.get(first).key == "report-2024-01-01"
    other = board.post("report", "f", {"day": 2}, key="report-2024-01-02")
    assert other.id != first.id
    assert board.job_count == 2


def test_a_key_holds_while_the_job_is_kept_and_purging_frees_it(board):
    job = board.post("j", "f", key="once")
    claim = board.claim(job, unique_owner("w"))
    board.consume(job, claim.owner, claim.token, result=1)
    again = board.post("j", "f", key="once")
    assert again.id == job.id and again.state is JobState.COMPLETE and again.result == 1
    assert board.purge() == 1
    fresh = board.post("j", "f", key="once")
    assert fresh.id != job.id and fresh.state is JobState.WAITING


def test_racing_producers_posting_one_key_get_one_job(board_factory):
    boards = [board_factory() for _ in range(4)]
    ids: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def producer(n: int) -> None:
        board = boards[n % len(boards)]
        start.wait()
        for round_ in range(3):
            try:
                job = board.post(f"p{n}", "f", {"n": n}, key=f"race-{round_}")
            except Exception as err:  # pragma: no cover - reported below
                failures.append(err)
                continue
            with lock:
                ids.append(job.id)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert len(ids) == 24
    listed = list(boards[0].iterjobs(ensure_fresh=True))
    assert len(listed) == 3 and len(set(ids)) == 3
    assert {j.key for j in listed} == {"race-0", "race-1", "race-2"}


@pytest.mark.parametrize("key", ["", "x" * 201, "a\nb", 5, b"bytes"])
def test_a_bad_key_is_refused_naming_the_field_and_the_job(board, key):
    with pytest.raises(InvalidJob) as info:
        board.post("named", "f", key=key)
    assert info.value.field == "key"
    assert "'key'" in str(info.value) and "named" in str(info.value)
    assert list(board.iterjobs(ensure_fresh=True)) == []


# -- posting for later ------------------------------------------------------------


def test_a_delayed_job_is_scheduled_then_claimable_from_its_due_time(board):
    job = board.post("later", "f", delay=1.0)
    assert job.state is JobState.SCHEDULED
    assert job.not_before == pytest.approx(job.created_at + 1.0, abs=0.01)
    got = board.get(job)
    assert got.state is JobState.SCHEDULED and got.not_before == pytest.approx(job.not_before, abs=0.01)
    assert [j.id for j in board.iterjobs(ensure_fresh=True)] == [job.id]
    assert list(board.iterjobs(only_unclaimed=True, ensure_fresh=True)) == []
    assert [j.id for j in board.iterjobs(states=["scheduled"])] == [job.id]
    assert board.job_count == 1
    who = unique_owner("c")
    assert board.claim_next(who) is None
    with pytest.raises(UnclaimableJob):
        board.claim(job, who)
    claim = wait_until(lambda: board.claim_next(who), timeout=PUSH_BOUND)
    assert claim.job_id == job.id
    assert time.time() >= job.not_before - 0.05  # due by the board's clock (same host)
    assert board.get(job).state is JobState.CLAIMED


def test_due_jobs_are_claimed_in_priority_order(board):
    now = time.time()
    low = board.post("low", "f", not_before=now + 0.3, priority="low")
    high = board.post("high", "f", not_before=now + 0.6, priority="high")
    normal = board.post("normal", "f")
    past = board.post("past", "f", not_before=now - 10)
    assert past.state is JobState.WAITING and past.not_before == pytest.approx(now - 10)
    wait_until(lambda: board.get(high).state is JobState.WAITING, timeout=PUSH_BOUND)
    who = unique_owner("c")
    order = [board.claim_next(who).job_id for _ in range(4)]
    assert order == [high.id, normal.id, past.id, low.id]


def test_an_idle_wait_wakes_at_the_due_time_of_a_job_posted_meanwhile(board_factory):
    waiter = board_factory()
    producer = board_factory()
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(waiter.wait(timeout=60)))
    thread.start()
    time.sleep(0.1)  # let the waiter block first (the behaviour under test)
    job = producer.post("later", "f", delay=0.5)
    thread.join(PUSH_BOUND)
    assert outcome == [True], "wait() did not wake at the due time"
    assert waiter.claim_next(unique_owner("c")).job_id == job.id


def test_cancel_and_forced_trash_of_scheduled_jobs_end_them_at_once(board_factory):
    board = board_factory()
    operator = board_factory()
    a = board.post("a", "f", delay=3600)
    b = board.post("b", "f", delay=3600)
    cancelled = operator.cancel(a)
    assert cancelled.state is JobState.CANCELLED
    assert board.get(a).state is JobState.CANCELLED
    trashed = operator.trash(b, "operator", force=True, reason="not wanted")
    assert trashed.state is JobState.TRASHED
    assert list(board.iterjobs(ensure_fresh=True)) == []


BAD_WHEN = [
    ("delay", {"delay": -1}),
    ("delay", {"delay": math.nan}),
    ("delay", {"delay": math.inf}),
    ("delay", {"delay": "5"}),
    ("not_before", {"not_before": -5.0}),
    ("not_before", {"not_before": math.inf}),
    ("delay", {"delay": 1, "not_before": time.time() + 5}),
]


@pytest.mark.parametrize("field,kwargs", BAD_WHEN, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_WHEN)])
def test_a_bad_due_time_is_refused_naming_the_field(board, field, kwargs):
    with pytest.raises(InvalidJob) as info:
        board.post("when", "f", **kwargs)
    assert info.value.field == field and field in str(info.value) and "when" in str(info.value)
    assert list(board.iterjobs(ensure_fresh=True)) == []


# -- children ---------------------------------------------------------------------


def test_children_are_recorded_and_listed_by_parent(board):
    parent = board.post("parent", "f")
    kids = [board.post(f"kid{i}", "g", parent=parent) for i in range(3)]
    other = board.post("other", "g", parent="someone-else")
    assert all(k.parent == parent.id for k in kids)
    assert board.get(kids[0]).parent == parent.id
    claim = board.claim(kids[0], unique_owner("w"))
    board.consume(kids[0], claim.owner, claim.token)
    assert [j.id for j in board.children(parent)] == [k.id for k in kids]
    assert [j.id for j in board.iterjobs(parent=parent.id)] == [k.id for k in kids[1:]]
    assert [j.id for j in board.iterjobs(parent=parent, states=["complete"])] == [kids[0].id]
    assert [j.id for j in board.children("someone-else")] == [other.id]
    assert board.children(kids[1]) == []
    with pytest.raises(InvalidJob) as info:
        board.post("orphan", "g", parent=42)
    assert info.value.field == "parent"


# -- the record store ---------------------------------------------------------------


def test_records_are_compare_and_set(board_factory):
    board = board_factory()
    other = board_factory()
    assert board.get_schedules() == {}
    assert board.put_schedule("nightly", {"every": 86400, "flow": "f"}) == 1
    with pytest.raises(VersionConflict):
        other.put_schedule("nightly", {"every": 1})
    assert other.put_schedule("nightly", {"every": 3600, "flow": "f"}, expect_version=1) == 2
    with pytest.raises(VersionConflict):
        board.put_schedule("nightly", {"every": 60}, expect_version=1)
    with pytest.raises(VersionConflict):
        board.put_schedule("missing", {"every": 60}, expect_version=1)
    board.put_schedule("hourly", {"every": 3600})
    stored = board.get_schedules()
    assert stored == {"nightly": ({"every": 3600, "flow": "f"}, 2), "hourly": ({"every": 3600}, 1)}
    assert stored["nightly"].version == 2 and stored["nightly"].record["flow"] == "f"
    with pytest.raises(VersionConflict):
        board.remove_schedule("nightly", expect_version=1)
    assert board.remove_schedule("nightly", expect_version=2) is True
    assert board.remove_schedule("nightly") is False
    assert other.remove_schedule("hourly") is True
    assert board.get_schedules() == {}
    assert board.put_schedule("nightly", {"again": True}) == 1


def test_racing_compare_and_set_writers_each_win_once_per_version(board_factory):
    boards = [board_factory() for _ in range(4)]
    boards[0].put_schedule("tick", {"n": 0})
    wins: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def writer(board) -> None:
        start.wait()
        for _ in range(5):
            record, version = board.get_schedules()["tick"]
            try:
                board.put_schedule("tick", {"n": record["n"] + 1}, expect_version=version)
            except VersionConflict:
                continue
            with lock:
                wins.append(version + 1)

    threads = [threading.Thread(target=writer, args=(b,)) for b in boards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = boards[0].get_schedules()["tick"]
    assert sorted(wins) == list(range(2, final.version + 1))  # every version won exactly once
    assert final.record["n"] == len(wins)


@pytest.mark.parametrize(
    "field,call",
    [
        ("name", lambda b: b.put_schedule("", {})),
        ("name", lambda b: b.put_schedule("a\nb", {})),
        ("record", lambda b: b.put_schedule("s", ["not", "a", "dict"])),
        ("record", lambda b: b.put_schedule("s", {"x": {1, 2}})),
        ("expect_version", lambda b: b.put_schedule("s", {}, expect_version=0)),
        ("expect_version", lambda b: b.remove_schedule("s", expect_version="1")),
    ],
)
def test_bad_records_are_refused_naming_the_field(board, field, call):
    with pytest.raises(InvalidJob) as info:
        call(board)
    assert info.value.field == field
    assert board.get_schedules() == {}
