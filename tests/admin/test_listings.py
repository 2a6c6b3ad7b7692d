"""The read-only commands: ``list``, ``show``, ``claims``, ``conductors``, ``stats``,
``export``, run as real processes against a board with a job in every state."""

from __future__ import annotations

import json

import pytest

from jobboard import JobState
from jobboard.admin.cli import EXIT_OK
from tests.admin.helpers import (
    CLAIM_KEYS,
    EXPORT_KEYS,
    GHOST,
    JOB_FIELDS,
    OWNER,
    TASK_KEYS,
    assert_fits,
    jb,
    jb_json,
    populate,
)


def test_list_json_has_every_state_and_the_job_schema(real_board):
    url, board = real_board
    jobs = populate(board)

    data = jb_json(url, "list")

    assert set(data) == {"jobs", "total"}
    assert data["total"] == len(jobs) == len(data["jobs"])
    assert {j["state"] for j in data["jobs"]} == {s.value for s in JobState}
    for record in data["jobs"]:
        assert set(record) == JOB_FIELDS | {"short_id", "running"}
        assert record["id"].startswith(record["short_id"]) and len(record["short_id"]) >= 8
        assert record["running"] == []  # no conductor saved a RUNNING record
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
        assert job.id[:8] in table.stdout


def test_show_gives_fields_claim_and_task_timings(real_board):
    url, board = real_board
    jobs = populate(board)
    claimed = jobs["claimed"]

    data = jb_json(url, "show", claimed.id)
    text = jb(url, "show", claimed.id[:8])  # a unique prefix is enough

    assert set(data) == {"job", "claim", "running", "progress", "retries", "parent", "children"}
    assert data["running"] == [] and data["retries"] == []
    assert data["parent"] is None and data["children"] == []
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
        assert set(claim) == CLAIM_KEYS | {"short_id", "running"}
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
        "metadata", "stale", "stale_after",
    }  # fmt: skip
    assert conductor["stale"] is False and conductor["stale_after"] > 0
    assert conductor["name"] == "conductor-1" and conductor["pid"] == 4242
    assert conductor["flows"] == ["images", "reports"] and conductor["running"] == 1
    assert 0 <= conductor["heartbeat_age"] < 60
    assert text.stdout.splitlines()[0].split() == [
        "NAME", "HOST", "PID", "FLOWS", "RUNNING", "HEARTBEAT", "STATUS",
    ]  # fmt: skip
    assert "host-a" in text.stdout and "images,reports" in text.stdout


def test_stats_counts_states_flows_and_losses(real_board):
    url, board = real_board
    populate(board)

    data = jb_json(url, "stats")
    text = jb(url, "stats")

    assert set(data) - {"server"} == {  # "server": backends that can tell (Redis)
        "states", "flows", "oldest_waiting_age", "counters", "claim_losses", "trashed", "poison",
        "paused_flows",
    }  # fmt: skip
    assert data["states"] == {
        "waiting": 1, "scheduled": 1, "claimed": 2, "complete": 1, "failed": 1, "trashed": 1,
        "cancelled": 1,
    }  # fmt: skip
    assert data["flows"]["reports"] == {"complete": 1, "failed": 1}
    assert data["oldest_waiting_age"] > 0
    assert data["trashed"] == 1 and data["claim_losses"] == 0
    assert text.returncode == EXIT_OK
    assert_fits(text.stdout)
    assert "claim losses" in text.stdout and "waiting 1   scheduled 1   claimed 2" in text.stdout


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
