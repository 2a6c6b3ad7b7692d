"""The ``jobboard`` admin tool.

Subcommands run as real processes (``python -m jobboard``) against a SQLite
board file that the test process fills with jobs in every state; ``watch``
runs under a pseudo-terminal. In-process tests on ``memory://`` cover the
rendering helpers and the watch loop's refresh policy.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import jobboard
from jobboard import JobBoard, JobState
from jobboard.admin import render
from jobboard.admin.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Watch,
    build_parser,
    main,
    parse_duration,
)
from jobboard.base import Entity, Job
from jobboard.memory import MemoryBoard
from tests.helpers import wait_until
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
OWNER = "conductor-1@host-a:4242:abcd1234"
GHOST = "ghost@elsewhere:99:deadbeef"
JOB_FIELDS = set(Job.__dataclass_fields__)
CLAIM_KEYS = {
    "job", "name", "flow", "owner", "token", "attempts", "claimed_at", "age",
    "lease_expires_at", "lease_left", "cancel_requested", "flags", "suspicious",
}  # fmt: skip
TASK_KEYS = {
    "task", "state", "host", "start", "durations", "success", "result", "error",
    "conductor", "execution",
}  # fmt: skip
EXPORT_KEYS = {
    "job", "job_name", "flow", "job_state", "task", "state", "conductor", "host",
    "durations", "success", "error", *render.EXECUTION_TIMES,
}  # fmt: skip


def execution(host: str, t0: float, *, ok: bool = True) -> dict[str, Any]:
    """A progress record as the engine saves it: 10 ms input, 400 ms task, 10 ms result."""
    return {
        "state": "SUCCESS" if ok else "FAILURE",
        "result": {"pixels": 42} if ok else None,
        "failure": None if ok else {"exc_type_names": ["ValueError"], "exception_str": "bad px"},
        "execution": {
            "hostname": host,
            "submit_time": t0,
            "received_time": t0 + 0.5,
            "execution_start_time": t0 + 0.01,
            "input_transform_start_time": t0 + 0.01,
            "input_transform_end_time": t0 + 0.02,
            "task_start_time": t0 + 0.02,
            "task_end_time": t0 + 0.42,
            "result_transform_start_time": t0 + 0.42,
            "result_transform_end_time": t0 + 0.43,
            "execution_end_time": t0 + 0.45,
            "success": ok,
            "exception": None if ok else {"exc_type": "ValueError", "message": "bad px"},
        },
        "metadata": {"conductor": OWNER},
    }


def populate(board: JobBoard) -> dict[str, Job]:
    """One job in every state (two claimed: one by a registered conductor, one not)."""
    t0 = time.time() - 60
    jobs = {"waiting": board.post("waiting-job", "images", {"image": 1})}
    jobs["claimed"] = board.post("claimed-job", "images", {"image": 2}, priority="high")
    claim = board.claim(jobs["claimed"], OWNER, lease=300)
    board.save_progress(claim, OWNER, claim.token, "fetch", execution("host-a", t0))
    board.save_progress(claim, OWNER, claim.token, "resize", execution("host-a", t0 + 1, ok=False))
    board.save_progress(claim, OWNER, claim.token, "publish", {"state": "PENDING"})
    jobs["ghost"] = board.post("ghost-job", "images", {"image": 3})
    board.claim(jobs["ghost"], GHOST, lease=300)
    jobs["complete"] = board.post("complete-job", "reports", {"day": 1})
    claim = board.claim(jobs["complete"], OWNER, lease=300)
    board.save_progress(claim, OWNER, claim.token, "render", execution("host-b", t0 + 2))
    board.consume(claim, OWNER, claim.token, result={"pages": 3})
    jobs["failed"] = board.post("failed-job", "reports", {"day": 2}, max_attempts=3)
    claim = board.claim(jobs["failed"], OWNER, lease=300)
    board.fail(claim, OWNER, claim.token, error="ValueError: bad day")
    jobs["trashed"] = board.post("trashed-job", "images", {"image": 4})
    board.trash(jobs["trashed"], "operator@test", force=True, reason="poison input")
    jobs["cancelled"] = board.post("cancelled-job", "images", {"image": 5})
    board.cancel(jobs["cancelled"])
    board.register_entity(
        "conductor-1",
        metadata={"host": "host-a", "pid": 4242, "flows": ["images", "reports"], "running": 1},
    )
    return {k: board.get(j) for k, j in jobs.items()}


@pytest.fixture(params=["sqlite", "redis", "zookeeper"])
def real_board(request, tmp_path):
    """A board that ``python -m jobboard`` processes open too: (url, board).

    SQLite (a file under ``tmp_path``), Redis and ZooKeeper (the session's
    servers, a fresh namespace); Redis and ZooKeeper also push other
    processes' events to ``watch``.
    """
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path.resolve()}/board.db"
    else:
        base = request.getfixturevalue(f"{request.param}_url")
        url = f"{base}?namespace=cli{uuid.uuid4().hex[:12]}"
    board = jobboard.connect(url)
    yield url, board
    board.close()


def jb(url: str | None, *args: str, stdin: str = "", env: dict | None = None):
    """Run ``python -m jobboard ARGS`` with the board in ``$CONDUCTOR_BOARD``."""
    environ = {**os.environ, "COLUMNS": "80", **(env or {})}
    environ.pop("CONDUCTOR_BOARD", None)
    if url is not None:
        environ["CONDUCTOR_BOARD"] = url
    return subprocess.run(
        [sys.executable, "-m", "jobboard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=ROOT,
    )


def jb_json(url: str, *args: str) -> Any:
    done = jb(url, *args, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done, code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.strip().splitlines() if not x.endswith("[y/N] ")]
    assert len(lines) == 1 and lines[0].startswith("jobboard: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide


# -- listings -------------------------------------------------------------------


def test_list_json_has_every_state_and_the_job_schema(real_board):
    url, board = real_board
    jobs = populate(board)

    data = jb_json(url, "list")

    assert set(data) == {"jobs", "total"}
    assert data["total"] == len(jobs) == len(data["jobs"])
    assert {j["state"] for j in data["jobs"]} == {s.value for s in JobState}
    for record in data["jobs"]:
        assert set(record) == JOB_FIELDS
    by_id = {j["id"]: j for j in data["jobs"]}
    assert by_id[jobs["claimed"].id]["owner"] == OWNER
    assert by_id[jobs["complete"].id]["result"] == {"pages": 3}


def test_list_filters_limit_and_table(real_board):
    url, board = real_board
    jobs = populate(board)

    failed = jb_json(url, "list", "--state", "failed")
    reports = jb_json(url, "list", "--flow", "reports")
    active = jb_json(url, "list", "--state", "waiting", "--state", "claimed", "--limit", "2")
    table = jb(url, "list")

    assert [j["id"] for j in failed["jobs"]] == [jobs["failed"].id]
    assert {j["id"] for j in reports["jobs"]} == {jobs["complete"].id, jobs["failed"].id}
    assert len(active["jobs"]) == 2 and active["total"] == 3
    assert {j["state"] for j in active["jobs"]} == {"claimed"}  # claimed jobs are listed first
    assert table.returncode == EXIT_OK
    assert_fits(table.stdout)
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "FLOW", "STATE"]
    for job in jobs.values():
        assert render.short_id(job.id) in table.stdout


def test_show_gives_fields_claim_and_task_timings(real_board):
    url, board = real_board
    jobs = populate(board)
    claimed = jobs["claimed"]

    data = jb_json(url, "show", claimed.id)
    text = jb(url, "show", claimed.id[:8])  # a unique prefix is enough

    assert set(data) == {"job", "claim", "progress"}
    assert data["job"]["id"] == claimed.id and set(data["job"]) == JOB_FIELDS
    assert set(data["claim"]) == CLAIM_KEYS
    assert data["claim"]["owner"] == OWNER and data["claim"]["token"] == claimed.token
    assert 250 < data["claim"]["lease_left"] <= 300
    tasks = {t["task"]: t for t in data["progress"]}
    assert [t["task"] for t in data["progress"]] == ["fetch", "resize", "publish"]
    for task in data["progress"]:
        assert set(task) == TASK_KEYS
    assert tasks["fetch"]["host"] == "host-a"
    assert tasks["fetch"]["durations"]["task"] == pytest.approx(0.4, abs=1e-6)
    assert tasks["fetch"]["durations"]["input_transform"] == pytest.approx(0.01, abs=1e-6)
    assert tasks["fetch"]["result"] == {"pixels": 42} and tasks["fetch"]["error"] is None
    assert tasks["resize"]["error"] == "ValueError: bad px" and tasks["resize"]["success"] is False
    assert tasks["publish"]["execution"] is None and tasks["publish"]["host"] is None
    assert text.returncode == EXIT_OK, text.stderr
    assert_fits(text.stdout)
    for word in (claimed.id, "Claim", OWNER, "lease left", "fetch", "host-a", "400ms", "bad px"):
        assert word in text.stdout


def test_show_finished_job_has_no_claim(real_board):
    url, board = real_board
    jobs = populate(board)

    data = jb_json(url, "show", jobs["complete"].id)
    text = jb(url, "show", jobs["cancelled"].id)

    assert data["claim"] is None and data["job"]["state"] == "complete"
    assert data["progress"][0]["host"] == "host-b"
    assert "Claim: none" in text.stdout and "no task has saved progress" in text.stdout


def test_claims_marks_unknown_owners_cancels_and_long_claims(real_board):
    url, board = real_board
    jobs = populate(board)
    board.cancel(jobs["claimed"])  # claimed: the owner is asked to stop

    data = jb_json(url, "claims")
    long_ones = jb_json(url, "claims", "--long-after", "0s")
    text = jb(url, "claims")

    claims = {c["job"]: c for c in data["claims"]}
    assert set(claims) == {jobs["claimed"].id, jobs["ghost"].id}
    for claim in claims.values():
        assert set(claim) == CLAIM_KEYS
    assert claims[jobs["ghost"].id]["flags"] == ["unknown-owner"]
    assert claims[jobs["claimed"].id]["flags"] == ["cancel-requested"]
    assert all(c["suspicious"] for c in claims.values())
    assert all("long" in c["flags"] for c in long_ones["claims"])
    assert text.returncode == EXIT_OK
    assert_fits(text.stdout)
    ghost_row = next(line for line in text.stdout.splitlines() if GHOST[:10] in line)
    assert ghost_row.startswith("!") and "unknown-owner" in ghost_row


def test_conductors_lists_registered_entities(real_board):
    url, board = real_board
    populate(board)

    data = jb_json(url, "conductors")
    text = jb(url, "conductors")

    (conductor,) = data["conductors"]
    assert set(conductor) == {
        "name", "kind", "host", "pid", "flows", "running", "last_seen", "heartbeat_age",
        "metadata",
    }  # fmt: skip
    assert conductor["name"] == "conductor-1" and conductor["pid"] == 4242
    assert conductor["flows"] == ["images", "reports"] and conductor["running"] == 1
    assert 0 <= conductor["heartbeat_age"] < 60
    assert text.stdout.splitlines()[0].split() == [
        "NAME", "HOST", "PID", "FLOWS", "RUNNING", "HEARTBEAT",
    ]  # fmt: skip
    assert "host-a" in text.stdout and "images,reports" in text.stdout


def test_stats_counts_states_flows_and_losses(real_board):
    url, board = real_board
    populate(board)

    data = jb_json(url, "stats")
    text = jb(url, "stats")

    assert set(data) - {"server"} == {  # "server": backends that can tell (Redis)
        "states", "flows", "oldest_waiting_age", "counters", "claim_losses", "trashed", "poison",
    }  # fmt: skip
    assert data["states"] == {
        "waiting": 1, "claimed": 2, "complete": 1, "failed": 1, "trashed": 1, "cancelled": 1,
    }  # fmt: skip
    assert data["flows"]["reports"] == {"complete": 1, "failed": 1}
    assert data["oldest_waiting_age"] > 0
    assert data["trashed"] == 1 and data["claim_losses"] == 0
    assert text.returncode == EXIT_OK
    assert_fits(text.stdout)
    assert "claim losses" in text.stdout and "waiting 1   claimed 2" in text.stdout


def test_export_writes_one_record_per_task_execution(real_board, tmp_path):
    url, board = real_board
    jobs = populate(board)

    done = jb(url, "export", "--format", "jsonl")
    recent = jb(url, "export", "--since", "30s")
    to_file = jb(url, "export", "--since", "1h", "--flow", "reports", "-o", str(tmp_path / "x"))

    assert done.returncode == EXIT_OK, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 3  # fetch, resize, render; "publish" never ran
    for record in records:
        assert set(record) == EXPORT_KEYS
    by_task = {r["task"]: r for r in records}
    assert (
        by_task["resize"]["success"] is False and by_task["resize"]["error"] == "ValueError: bad px"
    )
    assert by_task["render"]["job"] == jobs["complete"].id and by_task["render"]["host"] == "host-b"
    assert by_task["fetch"]["conductor"] == OWNER
    assert by_task["fetch"]["task_end_time"] - by_task["fetch"]["task_start_time"] == pytest.approx(
        0.4, abs=1e-6
    )
    assert recent.returncode == EXIT_OK and recent.stdout == ""  # executions started 60 s ago
    exported = (tmp_path / "x").read_text().splitlines()
    assert to_file.returncode == EXIT_OK and [json.loads(x)["task"] for x in exported] == ["render"]


# -- operations -----------------------------------------------------------------


def test_post_prints_the_id_of_the_job_it_posted(real_board, tmp_path):
    url, board = real_board
    store_file = tmp_path / "store.json"
    store_file.write_text('{"image": 7, "sizes": [1, 2]}')

    inline = jb(url, "post", "resize-1", "--flow", "images", "--store", '{"image": 6}')
    from_file = jb(
        url, "post", "resize-2", "--flow", "images", "--store", f"@{store_file}",
        "--priority", "very_high", "--max-attempts", "3",
    )  # fmt: skip

    assert inline.returncode == EXIT_OK and from_file.returncode == EXIT_OK
    first = board.get(inline.stdout.strip())
    second = board.get(from_file.stdout.strip())
    assert (first.name, first.flow, first.store) == ("resize-1", "images", {"image": 6})
    assert second.store == {"image": 7, "sizes": [1, 2]}
    assert second.priority == "VERY_HIGH" and second.max_attempts == 3


@pytest.mark.parametrize(
    "args,words",
    [
        (["--store", "{not json"], ["not valid JSON"]),
        (["--store", "[1, 2]"], ["must be a JSON object"]),
        (["--store", "@/nonexistent/store.json"], ["cannot read store file"]),
        (["--max-attempts", "0"], ["max_attempts"]),
    ],
    ids=["bad-json", "not-object", "no-file", "bad-attempts"],
)
def test_post_rejects_bad_input_as_usage_errors(real_board, args, words):
    url, board = real_board

    done = jb(url, "post", "x", "--flow", "images", *args)

    assert_one_line_error(done, EXIT_USAGE, *words)
    assert list(board.iterjobs()) == []


def test_post_bad_flow_and_priority_are_usage_errors(real_board):
    url, board = real_board

    bad_flow = jb(url, "post", "x", "--flow", "no spaces allowed")
    bad_priority = jb(url, "post", "x", "--flow", "images", "--priority", "urgent")

    assert_one_line_error(bad_flow, EXIT_USAGE, "flow")
    assert bad_priority.returncode == EXIT_USAGE and "invalid priority" in bad_priority.stderr
    assert list(board.iterjobs()) == []


def test_abandon_refuses_unclaimed_asks_then_releases(real_board):
    url, board = real_board
    jobs = populate(board)
    claimed = jobs["claimed"]

    wrong = jb(url, "abandon", jobs["waiting"].id, "--yes")
    declined = jb(url, "abandon", claimed.id, stdin="n\n")
    unchanged = board.get(claimed)
    accepted = jb(url, "abandon", claimed.id, "--reason", "host draining", stdin="y\n")

    assert_one_line_error(wrong, EXIT_REFUSED, "refused: cannot abandon", "it must be claimed")
    assert_one_line_error(declined, EXIT_REFUSED, "not confirmed")
    assert unchanged.state is JobState.CLAIMED and unchanged.owner == OWNER
    assert accepted.returncode == EXIT_OK, accepted.stderr
    assert "Abandon job" in accepted.stderr  # the question was asked
    after = board.get(claimed)
    assert after.state is JobState.WAITING and after.last_error == "host draining"
    with pytest.raises(jobboard.NotOwner):  # the old owner's token is stale now
        board.save_progress(claimed, OWNER, claimed.token, "fetch", {"state": "SUCCESS"})


def test_trash_refuses_finished_jobs_and_trashes_with_reason(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "trash", jobs["complete"].id, "--yes")
    done = jb(url, "trash", jobs["ghost"].id, "--reason", "poison input", "--yes")

    assert_one_line_error(wrong, EXIT_REFUSED, "complete")
    assert board.get(jobs["complete"]).state is JobState.COMPLETE
    assert done.returncode == EXIT_OK, done.stderr
    after = board.get(jobs["ghost"])
    assert after.state is JobState.TRASHED and after.last_error == "poison input"


def test_cancel_waiting_now_claimed_by_flag_finished_refused(real_board):
    url, board = real_board
    jobs = populate(board)

    waiting = jb(url, "cancel", jobs["waiting"].id, "--yes")
    claimed = jb(url, "cancel", jobs["claimed"].id, "--yes")
    finished = jb(url, "cancel", jobs["failed"].id, "--yes")

    assert waiting.returncode == EXIT_OK and "cancelled" in waiting.stdout
    assert board.get(jobs["waiting"]).state is JobState.CANCELLED
    assert claimed.returncode == EXIT_OK and "cancel requested" in claimed.stdout
    after = board.get(jobs["claimed"])
    assert after.state is JobState.CLAIMED and after.cancel_requested
    assert_one_line_error(finished, EXIT_REFUSED, "failed")


def test_retry_reposts_failed_trashed_and_cancelled_jobs(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "retry", jobs["waiting"].id, "--yes")
    retried = {k: jb(url, "retry", jobs[k].id, "--yes") for k in ("failed", "trashed", "cancelled")}

    assert_one_line_error(wrong, EXIT_REFUSED, "waiting")
    for key, done in retried.items():
        assert done.returncode == EXIT_OK, done.stderr
        old, new = jobs[key], board.get(done.stdout.strip())
        assert new.id != old.id and new.state is JobState.WAITING
        assert (new.name, new.flow, new.store, new.priority, new.max_attempts) == (
            old.name, old.flow, old.store, old.priority, old.max_attempts,
        )  # fmt: skip
        assert new.details["retry_of"] == old.id
    assert board.get(jobs["failed"]).state is JobState.FAILED  # the original is kept


def test_purge_refuses_unfinished_states_and_deletes_old_finished_jobs(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "purge", "--state", "waiting", "--older-than", "0s", "--yes")
    too_young = jb(url, "purge", "--state", "complete", "--older-than", "1d", "--yes")
    declined = jb(url, "purge", "--state", "complete", "--older-than", "0s")  # stdin: EOF
    still_there = board.get(jobs["complete"])
    done = jb(url, "purge", "--state", "complete", "--older-than", "0s", "--yes")

    assert_one_line_error(wrong, EXIT_REFUSED, "only finished jobs")
    assert too_young.returncode == EXIT_OK and "nothing to purge" in too_young.stdout
    assert_one_line_error(declined, EXIT_REFUSED, "not confirmed")
    assert still_there.state is JobState.COMPLETE
    assert done.returncode == EXIT_OK and "purged 1 jobs" in done.stdout
    with pytest.raises(jobboard.JobNotFound):
        board.get(jobs["complete"])
    assert board.get(jobs["failed"]).state is JobState.FAILED


# -- errors and help ------------------------------------------------------------


def test_errors_are_one_line_with_their_exit_codes(real_board, tmp_path):
    url, board = real_board
    populate(board)

    no_board = jb(None, "list")
    bad_url = jb("not-a-url", "list")
    unknown_scheme = jb("gopher://x", "list")
    unknown_job = jb(url, "show", "0" * 32)
    if url.startswith("sqlite"):
        unreachable = jb(f"sqlite://{tmp_path}/missing/dir/board.db", "list")
    else:
        unreachable = jb(f"redis://127.0.0.1:{free_port()}/0?retry_deadline=0.5", "list")
    bad_option = jb(url, "list", "--limit", "-1")

    assert_one_line_error(no_board, EXIT_USAGE, "CONDUCTOR_BOARD")
    assert_one_line_error(bad_url, EXIT_USAGE, "not-a-url")
    assert_one_line_error(unknown_scheme, EXIT_USAGE, "gopher")
    assert_one_line_error(unknown_job, EXIT_REFUSED, "0" * 32)
    assert_one_line_error(unreachable, EXIT_UNAVAILABLE, "unreachable")
    assert bad_option.returncode == EXIT_USAGE and "Traceback" not in bad_option.stderr


def test_board_option_after_the_subcommand_and_module_entry_point(real_board):
    url, board = real_board
    job = board.post("one", "images")

    done = jb(None, "list", "--board", url, "--json")
    helped = jb(None, "--help")

    assert done.returncode == EXIT_OK and json.loads(done.stdout)["jobs"][0]["id"] == job.id
    assert helped.returncode == EXIT_OK and "examples:" in helped.stdout


def test_every_subcommand_help_shows_examples(capsys):
    subcommands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001

    for name in subcommands:
        assert main([name, "--help"]) == EXIT_OK
        out = capsys.readouterr().out
        assert "examples:" in out and f"jobboard {name}" in out, name
    assert main(["--help"]) == EXIT_OK
    assert "exit codes:" in capsys.readouterr().out
    assert set(subcommands) == {
        "list", "show", "claims", "conductors", "watch", "post", "abandon", "trash", "cancel",
        "retry", "purge", "export", "stats",
    }  # fmt: skip


def test_ambiguous_prefix_is_a_usage_error(capsys):
    name = f"amb{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(f"memory://{name}")
    try:
        seen: dict[str, str] = {}
        prefix = None
        for _ in range(5000):  # ~65k four-hex-digit prefixes: a repeat comes within a few hundred
            job = board.post("j", "f")
            if job.id[:4] in seen:
                prefix = job.id[:4]
                break
            seen[job.id[:4]] = job.id
        assert prefix is not None

        code = main(["--board", f"memory://{name}", "show", prefix])

        assert code == EXIT_USAGE and "ambiguous" in capsys.readouterr().err
    finally:
        board.close()
        MemoryBoard.reset(name)


# -- watch ----------------------------------------------------------------------


class PtyReader:
    """Collect what a child writes to a pseudo-terminal; wait for text with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.text += os.read(self.fd, 65536).decode(errors="replace")
            except OSError:  # EIO: the child closed the terminal
                pass

    def wait_for(self, predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not seen within {timeout}s; output:\n{self.text[-2000:]}")
            self.pump(min(remaining, 0.2))


def test_watch_under_a_pty_refreshes_and_quits_on_sigint(real_board):
    url, board = real_board
    # Redis pushes other processes' events: a full refresh every minute must not be needed.
    interval = "60s" if url.startswith("redis") else "0.5s"
    board.post("first", "images")
    master, slave = os.openpty()
    environ = {**os.environ, "CONDUCTOR_BOARD": url, "COLUMNS": "80", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobboard", "watch", "--interval", interval],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    reader = PtyReader(master)
    try:
        # Given a live view of one waiting job
        reader.wait_for(lambda text: "waiting 1 " in text)
        # When jobs are posted and claimed by another process
        board.post("second", "images")
        reader.wait_for(lambda text: "waiting 2 " in text)
        claim = board.claim_next(OWNER, lease=300)
        reader.wait_for(lambda text: "claimed 1 " in text and render.short_id(claim.job_id) in text)
        frames = reader.text.count("jobboard watch ")
        # Then Ctrl-C ends it cleanly
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            reader.pump(0.1)  # keep draining the terminal so the child never blocks on it
        assert proc.returncode == EXIT_OK, reader.text[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert frames >= 3
    assert "\x1b[2J" in reader.text  # a terminal gets a redrawn screen, not a scroll
    assert "Traceback" not in reader.text


def test_watch_without_a_terminal_prints_n_frames_and_exits(real_board):
    url, board = real_board
    populate(board)

    done = jb(url, "watch", "--iterations", "2", "--interval", "0.2s")

    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.count("jobboard watch ") == 2 and "\x1b[" not in done.stdout
    assert "waiting 1   claimed 2   complete 1   failed 1   trashed 1   cancelled 1" in done.stdout
    assert_fits(done.stdout)


class CountingBoard:
    """Wraps a board and counts the reads the watch makes."""

    def __init__(self, board: JobBoard) -> None:
        self.board = board
        self.reads = 0
        self.full_reads = 0

    def iterjobs(self, *args, **kwargs):
        self.reads += 1
        return self.board.iterjobs(*args, **kwargs)

    def stats(self):
        self.full_reads += 1
        return self.board.stats()

    def __getattr__(self, name: str):
        return getattr(self.board, name)


@pytest.fixture
def memory_board():
    name = f"watch{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(f"memory://{name}")
    yield board
    board.close()
    MemoryBoard.reset(name)


def test_watch_redraws_on_events_and_rate_limits_bursts(memory_board):
    spy = CountingBoard(memory_board)
    out = io.StringIO()
    watch = Watch(spy, out, label="memory://x", interval=60.0)  # type: ignore[arg-type]
    runner = threading.Thread(target=watch.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: watch.frames == 1)
        # When 200 jobs are posted in a burst and then one is claimed
        started = time.monotonic()
        for i in range(200):
            memory_board.post(f"job-{i}", "images")
        wait_until(lambda: "waiting 200 " in out.getvalue())
        claim = memory_board.claim_next(OWNER, lease=300)
        wait_until(lambda: "claimed 1 " in out.getvalue())
        elapsed = time.monotonic() - started
        # Then events drove the redraws, never more than one per MIN_GAP
        assert watch.frames <= 2 + elapsed / Watch.MIN_GAP + 1
        assert spy.reads == watch.frames or spy.reads == watch.frames + 1
        assert spy.full_reads == 1  # the finished counts were read once, at the start
        memory_board.consume(claim, OWNER, claim.token)
        wait_until(lambda: "complete 1 " in out.getvalue())
        assert spy.full_reads == 1  # a finishing event advances the count without a scan
    finally:
        watch.stop()
        runner.join(10)
    assert not runner.is_alive()


# -- rendering units --------------------------------------------------------------


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
