"""Incident tools of the admin command: short ids, lookup by name, running tasks, stale
conductors, post warnings, retry guards, bulk retry, clearing a backlog, pausing a flow,
``cancel --force`` and word wrapping in ``show``."""

from __future__ import annotations

import json
import threading
import time

import pytest

from jobboard import JobState
from jobboard.admin import lookup
from jobboard.admin.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from jobboard.admin.running import running_line, running_tasks
from tests.admin.helpers import OWNER, assert_fits, assert_one_line_error, jb, jb_json
from tests.helpers import wait_until


def run(board, capsys, *argv: str) -> tuple[int, str, str]:
    """``jobboard ARGV`` in this process on a ``memory://`` board: (code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["--board", f"memory://{board.name}", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- short ids and lookup ---------------------------------------------------------


def test_short_ids_are_the_shortest_unique_prefixes():
    ids = [f"p2+slow+00000000{n:02d}" for n in range(3, 13)] + ["p1+fast+0000000001", "ab12"]
    short = lookup.short_ids(ids)
    assert len(set(short.values())) == len(ids)
    for job_id, prefix in short.items():
        assert job_id.startswith(prefix)
        assert [i for i in ids if i.startswith(prefix)] == [job_id]
    assert short["p2+slow+0000000006"] == "p2+slow+0000000006"  # differs only at the end
    assert short["p1+fast+0000000001"] == "p1+fast+"  # never below the minimum
    assert short["ab12"] == "ab12"  # shorter than the minimum: whole


def test_listing_ids_are_unique_and_usable_on_every_backend(real_board):
    url, board = real_board
    jobs = [board.post(f"slow-{n}", "slow") for n in range(3)]

    listed = jb_json(url, "list")["jobs"]
    table = jb(url, "list")

    shown = {j["id"]: j["short_id"] for j in listed}
    assert len(set(shown.values())) == 3
    assert table.returncode == EXIT_OK
    rows = table.stdout.splitlines()[1:]
    for job in jobs:
        # The table shows the distinguishing id, and show finds the job by it.
        assert any(row.split()[0] == shown[job.id] for row in rows), table.stdout
        assert jb_json(url, "show", shown[job.id])["job"]["id"] == job.id
        assert jb_json(url, "show", job.name)["job"]["id"] == job.id  # by its unique name


def test_lookup_by_name_is_unique_or_a_clear_usage_error(memory_board, capsys):
    first = memory_board.post("nightly", "reports")
    code, out, _ = run(memory_board, capsys, "show", "nightly", "--json")
    assert code == EXIT_OK and json.loads(out)["job"]["id"] == first.id
    second = memory_board.post("nightly", "reports")

    code, _, err = run(memory_board, capsys, "show", "nightly")

    assert code == EXIT_USAGE
    assert "ambiguous" in err and first.id in err and second.id in err
    code, _, err = run(memory_board, capsys, "show", "no-such-name")
    assert code == EXIT_REFUSED and "no-such-name" in err


# -- running tasks ----------------------------------------------------------------


def _running_record(token: int, *, fraction: float | None = 0.4) -> dict:
    now = time.time()
    progress = None if fraction is None else {
        "fraction": fraction, "message": "tile 3 of 8", "details": {"tile": 3}, "updated_at": now,
    }  # fmt: skip
    return {
        "state": "RUNNING", "result": None, "failure": None, "execution": None,
        "task_number": 2, "task_count": 3, "progress": progress,
        "metadata": {"conductor": "c1", "owner": OWNER, "token": token, "started_at": now - 5},
    }  # fmt: skip


def test_running_task_shows_in_show_list_and_claims(memory_board, capsys):
    job = memory_board.post("render", "images")
    claim = memory_board.claim(job, OWNER, lease=300)
    memory_board.save_progress(claim, OWNER, claim.token, "resize", _running_record(claim.token))

    shown = json.loads(run(memory_board, capsys, "show", job.id, "--json")[1])
    listed = json.loads(run(memory_board, capsys, "list", "--json")[1])
    claims = json.loads(run(memory_board, capsys, "claims", "--json")[1])
    text = run(memory_board, capsys, "claims")[1]
    page = run(memory_board, capsys, "show", job.id)[1]

    (task,) = shown["running"]
    assert task["task"] == "resize" and (task["task_number"], task["task_count"]) == (2, 3)
    assert task["fraction"] == 0.4 and task["message"] == "tile 3 of 8"
    assert task["details"] == {"tile": 3} and 0 <= task["progress_age"] < 60
    def stable(tasks):  # the ages grow between two reads
        return [{k: v for k, v in t.items() if k not in ("progress_age", "running_for")} for t in tasks]

    assert stable(listed["jobs"][0]["running"]) == stable(shown["running"])
    assert stable(claims["claims"][0]["running"]) == stable(shown["running"])
    assert "task 2 of 3" in text and "NAME" in text.splitlines()[0] and "render" in text
    assert "task 2 of 3" in page and "tile 3 of 8" in page and "40%" in page


def test_running_records_of_an_earlier_claim_are_ignored():
    from jobboard.model import Job, JobState

    job = Job("j1", "n", "f", {}, state=JobState.CLAIMED, token=3)
    progress = {"old": _running_record(2), "new": _running_record(3, fraction=None)}
    tasks = running_tasks(job, progress, time.time())
    assert [t["task"] for t in tasks] == ["new"]
    assert tasks[0]["fraction"] is None and "running" in running_line(tasks)
    finished = Job("j1", "n", "f", {}, state=JobState.FAILED, token=3)
    assert running_tasks(finished, progress, time.time()) == []


# -- conductors and posting -----------------------------------------------------------


def test_conductors_flags_a_conductor_that_missed_two_refreshes(memory_board, capsys):
    memory_board.register_entity("alive", metadata={"flows": ["images"], "heartbeat_interval": 60})
    memory_board.register_entity("gone", metadata={"flows": ["images"], "heartbeat_interval": 0.01})

    def rows():
        data = json.loads(run(memory_board, capsys, "conductors", "--json")[1])
        return {c["name"]: c for c in data["conductors"]}

    wait_until(lambda: rows()["gone"]["stale"], timeout=10)
    assert rows()["alive"]["stale"] is False and rows()["gone"]["stale_after"] == pytest.approx(0.02)
    text = run(memory_board, capsys, "conductors")[1]
    assert next(line for line in text.splitlines() if line.startswith("gone")).endswith("stale")
    assert "stale:" in text


def test_post_warns_when_no_live_conductor_serves_the_flow(memory_board, capsys):
    code, out, err = run(memory_board, capsys, "post", "j1", "--flow", "images")
    assert code == EXIT_OK and out.strip() and "no live conductor serves flow 'images'" in err

    memory_board.register_entity("c1", metadata={"flows": ["images"], "heartbeat_interval": 60})
    code, _, err = run(memory_board, capsys, "post", "j2", "--flow", "images")
    assert code == EXIT_OK and err == ""

    memory_board.pause_flow("images", reason="incident")
    code, _, err = run(memory_board, capsys, "post", "j3", "--flow", "images")
    assert code == EXIT_OK and "flow 'images' is paused" in err


# -- retry --------------------------------------------------------------------------


def _failed(board, name: str, flow: str = "billing"):
    job = board.post(name, flow, {"n": name})
    claim = board.claim(job, OWNER)
    return board.fail(claim, OWNER, claim.token, error="boom")


def test_retry_refuses_a_job_already_retried_unless_again(memory_board, capsys):
    job = _failed(memory_board, "invoice")

    code, out, _ = run(memory_board, capsys, "retry", job.id, "--yes")
    assert code == EXIT_OK
    first = memory_board.get(out.strip())
    code, _, err = run(memory_board, capsys, "retry", job.id, "--yes")
    assert code == EXIT_REFUSED and "already retried" in err and first.id in err
    code, out, _ = run(memory_board, capsys, "retry", job.id, "--again", "--yes")

    assert code == EXIT_OK
    second = memory_board.get(out.strip())
    assert first.details["retry_of"] == second.details["retry_of"] == job.id
    assert (first.details["retry"], second.details["retry"]) == (1, 2)
    shown = json.loads(run(memory_board, capsys, "show", job.id, "--json")[1])
    assert shown["retries"] == [first.id, second.id]


def test_retry_all_of_a_flow_since_a_time(memory_board, capsys):
    old = _failed(memory_board, "old")
    horizon = time.time()
    wait_until(lambda: time.time() > horizon)
    recent = [_failed(memory_board, f"recent-{n}") for n in range(2)]
    other = _failed(memory_board, "other-flow", flow="images")

    code, out, err = run(
        memory_board, capsys, "retry", "--all", "--flow", "billing", "--since", str(horizon), "--yes"
    )

    assert code == EXIT_OK and "retried 2 jobs" in err
    new = [memory_board.get(i) for i in out.split()]
    assert sorted(j.details["retry_of"] for j in new) == sorted(j.id for j in recent)
    assert {j.flow for j in new} == {"billing"} and all(j.state is JobState.WAITING for j in new)
    # Run again: the same jobs are not retried twice; the old and other-flow ones never were.
    code, out, _ = run(memory_board, capsys, "retry", "--all", "--flow", "billing", "--yes")
    assert code == EXIT_OK and len(out.split()) == 1
    assert memory_board.get(out.strip()).details["retry_of"] == old.id
    assert not any(j.details.get("retry_of") == other.id for j in memory_board.iterjobs())
    code, _, err = run(memory_board, capsys, "retry", "--all", "--yes")
    assert code == EXIT_USAGE and "--flow" in err


# -- purge of a waiting backlog, pause and resume ---------------------------------------


def test_purge_waiting_needs_force_and_cancels_the_backlog(memory_board, capsys):
    backlog = [memory_board.post(f"b{n}", "images") for n in range(3)]
    keep = memory_board.post("other", "reports")
    running = memory_board.post("running", "images")
    memory_board.claim(running, OWNER)

    code, _, err = run(memory_board, capsys, "purge", "--state", "waiting", "--yes")
    assert code == EXIT_REFUSED and "--force" in err
    assert all(memory_board.get(j.id).state is JobState.WAITING for j in backlog)
    code, out, _ = run(
        memory_board, capsys, "purge", "--state", "waiting", "--flow", "images", "--force", "--yes"
    )

    assert code == EXIT_OK and "purged 3 waiting jobs" in out
    assert {memory_board.get(j.id).state for j in backlog} == {JobState.CANCELLED}
    assert memory_board.get(keep.id).state is JobState.WAITING
    assert memory_board.get(running.id).state is JobState.CLAIMED


def test_pause_and_resume_through_the_command(real_board):
    url, board = real_board

    paused = jb(url, "pause", "billing", "--reason", "provider down")
    listed = jb_json(url, "pause")
    stats = jb(url, "stats")
    resumed = jb(url, "resume", "billing")
    again = jb(url, "resume", "billing")

    assert paused.returncode == EXIT_OK and "billing paused" in paused.stdout
    assert listed["paused"]["billing"]["reason"] == "provider down"
    assert "provider down" in stats.stdout
    assert resumed.returncode == EXIT_OK and "resumed" in resumed.stdout
    assert "was not paused" in again.stdout and board.paused_flows() == {}
    assert_one_line_error(jb(url, "pause", "bad flow!"), EXIT_USAGE, "flow")


# -- cancel --force --------------------------------------------------------------------


def test_cancel_force_ends_a_job_whose_owner_does_not_stop(memory_board, capsys):
    job = memory_board.post("stuck", "images")
    claim = memory_board.claim(job, OWNER, lease=300)

    code, out, _ = run(
        memory_board, capsys, "cancel", job.id, "--force", "--grace", "0.2s",
        "--reason", "stuck on I/O", "--yes",
    )  # fmt: skip

    assert code == EXIT_OK and "force-cancelled" in out
    ended = memory_board.get(job.id)
    assert ended.state is JobState.CANCELLED and ended.last_error == "stuck on I/O"
    with pytest.raises(Exception, match="cancelled"):
        memory_board.consume(claim, OWNER, claim.token)


def test_cancel_force_lets_an_owner_that_stops_in_time_end_the_job(memory_board, capsys):
    job = memory_board.post("polite", "images")
    claim = memory_board.claim(job, OWNER, lease=300)

    def owner() -> None:  # the conductor's part: see the cancel, stop, end the job cancelled
        wait_until(lambda: memory_board.get(job.id).cancel_requested, timeout=10)
        memory_board.fail(claim, OWNER, claim.token, error="stopped on request", cancelled=True)

    thread = threading.Thread(target=owner)
    thread.start()
    code, out, _ = run(memory_board, capsys, "cancel", job.id, "--force", "--grace", "30s", "--yes")
    thread.join()

    assert code == EXIT_OK and "stopped by" in out
    assert memory_board.get(job.id).last_error == "stopped on request"


# -- show ----------------------------------------------------------------------------


def test_show_wraps_long_values_on_words(real_board):
    url, board = real_board
    words = [f"word{n:03d}" for n in range(60)]
    job = board.post("wordy", "images", {"text": " ".join(words), "id": "x" * 70})

    done = jb(url, "show", job.id, env={"COLUMNS": "60"})

    assert done.returncode == EXIT_OK
    assert_fits(done.stdout, 60)  # only a word longer than a whole line is broken
    tokens = {token.strip('"{},:') for token in done.stdout.split()}
    assert set(words) <= tokens  # no word was split across lines
