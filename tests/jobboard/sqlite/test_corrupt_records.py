"""An unreadable job record never stops a conductor or the admin tool (issue 9, item 9).

Records are corrupted with ``sqlite3`` directly, as a bad disk, a hand edit or
another program would: a store that is not JSON, a priority out of range, an
unknown state. The first claim that meets one trashes it with the reason and
goes on to the next job in the same transaction; ``get`` raises ``CorruptJob``
naming the field; listings show it marked unreadable; the admin tool lists,
shows, trashes and purges it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import jobboard
from jobboard import CorruptJob, InvalidJob, JobState, UnclaimableJob
from jobboard.admin.cli import EXIT_OK
from tests.admin.helpers import jb, jb_json
from tests.fixtures import sqlite_url
from tests.helpers import wait_until

CORRUPTIONS = {
    "store": ("store", "{not json"),
    "store-not-object": ("store", "[1, 2]"),
    "priority": ("priority", 9),
    "negative-priority": ("priority", -1),
    "details": ("details", "\x00"),
}


def _corrupt(path: Path, job_id: str, column: str, value: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job_id))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "board.db"


@pytest.fixture
def board(db: Path):
    b = jobboard.connect(sqlite_url(db))
    yield b
    b.close()


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_claim_next_trashes_an_unreadable_job_and_claims_the_next(board, db, kind):
    bad = board.post("bad", "flow-a", {"x": 1}, priority="high")
    good = board.post("good", "flow-a", {"y": 2})
    _corrupt(db, bad.id, *CORRUPTIONS[kind])

    claims = [board.claim_next("conductor-1") for _ in range(3)]

    # Whatever order the broken priority gives, the good job is claimed, never the bad one.
    taken = [c for c in claims if c is not None]
    assert [c.job_id for c in taken] == [good.id] and taken[0].job.store == {"y": 2}
    column = CORRUPTIONS[kind][0]
    with pytest.raises(CorruptJob) as raised:
        board.get(bad.id)
    assert raised.value.field == column and raised.value.job == bad.id
    assert isinstance(raised.value, InvalidJob) and bad.id in str(raised.value)
    trashed = next(j for j in board.iterjobs(states=["trashed"]) if j.id == bad.id)
    assert trashed.state is JobState.TRASHED
    assert column in trashed.last_error and "unreadable" in trashed.last_error
    assert board.counters().get("unreadable") == 1
    # A restart (a new board on the file) meets nothing unreadable any more.
    again = jobboard.connect(sqlite_url(db))
    try:
        assert again.claim_next("conductor-2") is None
    finally:
        again.close()


def test_claiming_an_unreadable_job_by_id_trashes_it(board, db):
    bad = board.post("bad", "flow-a")
    _corrupt(db, bad.id, "store", "nope")
    with pytest.raises(UnclaimableJob, match="unreadable"):
        board.claim(bad, "conductor-1")
    assert [j.id for j in board.iterjobs(states=["trashed"])] == [bad.id]


def test_an_unknown_state_is_listed_waiting_and_unreadable_and_can_be_trashed(board, db):
    bad = board.post("bad", "flow-a")
    _corrupt(db, bad.id, "state", "exploded")
    assert board.claim_next("conductor-1") is None
    listed = list(board.iterjobs())
    assert [j.id for j in listed] == [bad.id]
    assert listed[0].state is JobState.WAITING and "state" in listed[0].details["unreadable"]
    assert board.stats()["states"]["waiting"] == 1
    done = board.trash(bad.id, "operator", force=True, reason="bad record")
    assert done.state is JobState.TRASHED
    assert board.purge() == 1
    assert list(board.iterjobs(states=list(JobState))) == []


def test_a_held_claim_whose_record_breaks_is_lost_not_a_crash(board, db):
    job = board.post("j", "flow-a")
    claim = board.claim(job, "conductor-1", lease=600)  # only the watcher can tell
    _corrupt(db, job.id, "state", "exploded")
    wait_until(lambda: board.claim_status(claim) == "lost", message="the watcher sees the loss")


def test_unreadable_progress_is_skipped(board, db):
    job = board.post("j", "flow-a")
    claim = board.claim(job, "c")
    board.save_progress(claim, "c", claim.token, "one", {"state": "SUCCESS"})
    board.save_progress(claim, "c", claim.token, "two", {"state": "SUCCESS"})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE progress SET record = '{{' WHERE atom = 'two'")
    assert list(board.load_progress(job)) == ["one"]


def test_the_admin_tool_lists_shows_trashes_and_purges_an_unreadable_job(board, db):
    bad = board.post("bad", "flow-a")
    fine = board.post("fine", "flow-a")
    _corrupt(db, bad.id, "store", "{broken")
    _corrupt(db, fine.id, "priority", 42)
    url = sqlite_url(db)

    listed = jb(url, "list")
    assert listed.returncode == EXIT_OK, listed.stderr
    assert listed.stdout.count("(unreadable)") == 2
    shown = jb(url, "show", bad.id)
    assert shown.returncode == EXIT_OK, shown.stderr
    assert "unreadable record" in shown.stdout and "store" in shown.stdout
    assert jb_json(url, "show", bad.id)["job"]["details"]["unreadable"]
    stats = jb(url, "stats")
    assert stats.returncode == EXIT_OK, stats.stderr
    for job_id in (bad.id, fine.id):
        trashed = jb(url, "trash", job_id, "--yes")
        assert trashed.returncode == EXIT_OK, trashed.stderr
    assert jb(url, "list").stdout.count("trashed (unreadable)") == 2
    purged = jb(url, "purge", "--yes", "--older-than", "0s")
    assert purged.returncode == EXIT_OK, purged.stderr
    assert "purged 2 jobs" in purged.stdout
    assert jb(url, "list").stdout.strip() == "no jobs"
