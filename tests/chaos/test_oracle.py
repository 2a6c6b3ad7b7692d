"""The chaos oracle finds each kind of violation in a made-up history (no servers needed).

A chaos run that passes proves little unless its judge can fail: each test
here feeds :func:`tests.chaos.oracle.judge` a short history with one defect
in it and checks that exactly that defect is reported.
"""

from __future__ import annotations

from jobboard import JobState
from tests.chaos.chaos_flows import TASKS
from tests.chaos.oracle import FinalJob, TaskEvent, judge

FETCH, TRANSFORM, PUBLISH = TASKS


def run(token: int, pid: int, start: float, tasks=TASKS) -> list[TaskEvent]:
    """A clean run of ``tasks`` under one token, 1 s per task from ``start``."""
    events = []
    for i, name in enumerate(tasks):
        events.append(TaskEvent("start", "j", name, token, pid, start + i))
        events.append(TaskEvent("end", "j", name, token, pid, start + i + 0.5))
    return events


def complete(token: int, saved: dict[str, int]) -> FinalJob:
    progress = {name: {"state": "SUCCESS", "metadata": {"token": t}} for name, t in saved.items()}
    result = {f"{name}_out": {"token": t} for name, t in saved.items()}
    return FinalJob("j", JobState.COMPLETE, token, result, None, progress)


def test_a_clean_takeover_is_an_in_flight_rerun_only():
    # token 1 ran fetch, died in transform; token 2 resumed after fetch.
    events = [*run(1, 10, 0.0, (FETCH,)), TaskEvent("start", "j", TRANSFORM, 1, 10, 1.0)]
    events += run(2, 20, 5.0, (TRANSFORM, PUBLISH))
    verdict = judge({"j": complete(2, {FETCH: 1, TRANSFORM: 2, PUBLISH: 2})}, events, {"j": 1})
    assert verdict.violations == 0
    assert verdict.in_flight_reruns == 1


def test_a_saved_task_run_again_under_a_later_token_is_found():
    events = run(1, 10, 0.0, (FETCH, TRANSFORM)) + run(2, 20, 5.0)
    verdict = judge({"j": complete(2, {FETCH: 2, TRANSFORM: 2, PUBLISH: 2})}, events, {"j": 1})
    # fetch was saved under token 1 (transform started after it); transform's save is unknown
    assert verdict.saved_task_reruns == 1


def test_a_stale_owner_starting_a_task_after_its_save_is_found():
    # token 2 ran everything; stale token 1 starts transform after token 2 saved it
    # (token 2 started publish at 2.0); a start at 1.5 could precede the save: not counted.
    events = run(2, 20, 0.0) + [TaskEvent("start", "j", TRANSFORM, 1, 10, 2.5)]
    events += [TaskEvent("start", "j", TRANSFORM, 1, 10, 1.5)]
    verdict = judge({"j": complete(2, {FETCH: 2, TRANSFORM: 2, PUBLISH: 2})}, events, {"j": 1})
    assert verdict.saved_task_reruns == 1
    assert verdict.stale_writes_accepted == 0


def test_a_consume_under_a_stale_token_is_found():
    events = run(1, 10, 0.0) + [TaskEvent("start", "j", FETCH, 2, 20, 0.5)]
    verdict = judge({"j": complete(1, {FETCH: 1, TRANSFORM: 1, PUBLISH: 1})}, events, {"j": 1})
    assert verdict.stale_writes_accepted >= 1


def test_a_record_overwritten_by_a_stale_save_is_found():
    events = run(1, 10, 0.0, (FETCH,)) + run(2, 20, 5.0)
    # the board kept token 1's record of transform although token 2 saved it (it ran publish)
    verdict = judge({"j": complete(2, {FETCH: 1, TRANSFORM: 1, PUBLISH: 2})}, events, {"j": 1})
    assert verdict.stale_writes_accepted >= 1


def test_lost_stuck_double_consumed_and_reused_tokens_are_found():
    final = {
        "gone": FinalJob("gone", None),
        "wait": FinalJob("wait", JobState.WAITING, 3),
        "fail": FinalJob("fail", JobState.FAILED, 1, last_error="boom"),
        "j": complete(1, {FETCH: 1, TRANSFORM: 1, PUBLISH: 1}),
    }
    events = run(1, 10, 0.0) + [TaskEvent("start", "j", FETCH, 1, 99, 0.2)]
    verdict = judge(final, events, {"j": 2})
    assert (verdict.lost, verdict.stuck, verdict.double_consumed) == (2, 1, 1)
    assert verdict.token_reused == 1
