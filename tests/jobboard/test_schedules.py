"""Schedules: cron parsing, one job per tick however many promoters race, missed ticks once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from jobboard import errors
from jobboard.schedules import Cron, add_schedule, list_schedules, promote_due, set_paused


def _at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", _at(2024, 5, 1, 12, 7), _at(2024, 5, 1, 12, 15)),
        ("0 9 * * 1-5", _at(2024, 5, 3, 9, 0), _at(2024, 5, 6, 9, 0)),  # Fri -> Mon
        ("30 2 1,15 * *", _at(2024, 5, 1, 12, 7), _at(2024, 5, 15, 2, 30)),
        ("0 0 29 2 *", _at(2024, 3, 1), _at(2028, 2, 29)),
        ("5 4 * * 7", _at(2024, 5, 1), _at(2024, 5, 5, 4, 5)),  # 7 is Sunday
        ("0 12 1 * 1", _at(2024, 5, 1, 13), _at(2024, 5, 6, 12)),  # either day field
        ("0-10/5 23 31 12 *", _at(2024, 12, 31, 23, 5), _at(2024, 12, 31, 23, 10)),
    ],
)
def test_cron_next_fire_time_in_utc(expr, after, expected):
    assert Cron.parse(expr).next_after(after) == expected


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("* * *", "5 fields"),
        ("61 * * * *", "field minute"),
        ("* 5-2 * * *", "field hour"),
        ("* * 0 * *", "field day-of-month"),
        ("* * * 13 *", "field month"),
        ("* * * * mon", "field day-of-week"),
        ("*/0 * * * *", "field minute"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_cron_errors_name_the_field(expr, field):
    with pytest.raises(errors.InvalidJob, match=field):
        Cron.parse(expr)


@pytest.fixture(params=["memory", "sqlite", "redis", "zookeeper"])
def factory(request):
    return request.getfixturevalue(f"{request.param}_board_factory")


def test_a_tick_raced_by_many_promoters_is_one_job(factory):
    boards = [factory() for _ in range(4)]
    schedule = add_schedule(boards[0], "tick", "steps", every=60, now=1000.0)
    start = threading.Barrier(len(boards))
    failures: list[BaseException] = []

    def promote(board) -> None:
        try:
            start.wait(10)
            promote_due(board, ["steps"], now=schedule.next_at + 1)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            failures.append(err)

    threads = [threading.Thread(target=promote, args=(b,)) for b in boards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures and not any(t.is_alive() for t in threads)
    jobs = list(boards[0].iterjobs())
    assert len(jobs) == 1 and jobs[0].key == "schedule:tick:1060.000"
    (after,) = list_schedules(boards[0])
    assert after.next_at == 1120.0


def test_missed_ticks_are_posted_once_and_the_next_is_in_the_future(factory):
    board = factory()
    add_schedule(board, "poll", "steps", every=10, store={"n": 1}, now=0.0)
    promote_due(board, None, now=1005.0)  # ticks 10, 20, ... 1000 were all missed
    jobs = list(board.iterjobs())
    assert len(jobs) == 1 and jobs[0].key == "schedule:poll:1000.000"
    assert jobs[0].store == {"n": 1}
    assert list_schedules(board)[0].next_at == 1010.0
    assert promote_due(board, None, now=1009.0) == []
    assert len(promote_due(board, None, now=1010.0)) == 1


def test_paused_and_unserved_schedules_are_not_promoted(memory_board_factory):
    board = memory_board_factory()
    add_schedule(board, "a", "steps", every=10, now=0.0)
    add_schedule(board, "b", "other", every=10, now=0.0)
    set_paused(board, "a", True)
    assert promote_due(board, ["steps"], now=100.0) == []
    set_paused(board, "a", False)
    assert list_schedules(board)[0].next_at > 100.0  # resumed: no burst of old ticks
    with pytest.raises(errors.InvalidJob, match="every"):
        add_schedule(board, "c", "steps", every=-1)
    with pytest.raises(errors.VersionConflict):
        add_schedule(board, "a", "steps", every=10)


def test_a_long_outage_of_a_cron_schedule_posts_only_the_latest_tick(memory_board_factory):
    board = memory_board_factory()
    add_schedule(board, "minutely", "steps", cron="* * * * *", now=_at(2020, 1, 1))
    add_schedule(board, "monthly", "steps", cron="0 3 1 * *", now=_at(2020, 1, 1))
    posted = promote_due(board, None, now=_at(2024, 5, 17, 10, 30, 30))
    assert sorted(j.name for j in posted) == [
        "minutely@2024-05-17T10:30:00Z",
        "monthly@2024-05-01T03:00:00Z",
    ]
    assert [s.next_at for s in list_schedules(board)] == [
        _at(2024, 5, 17, 10, 31),
        _at(2024, 6, 1, 3),
    ]
