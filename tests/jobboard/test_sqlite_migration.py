"""A board file written by the first schema version is brought up to date on connect."""

from __future__ import annotations

import sqlite3

import jobboard
from jobboard import JobState
from jobboard.sqlite.schema import SCHEMA, SCHEMA_VERSION
from tests.fixtures import sqlite_url


def test_a_version_1_file_is_migrated_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO jobs (id, namespace, name, flow, store, priority, state, created_at,"
        " updated_at, max_attempts, details) VALUES ('old1', 'default', 'old', 'f', '{}', 2,"
        " 'waiting', 1.0, 1.0, 5, '{}')"
    )
    conn.close()
    board = jobboard.connect(sqlite_url(path))
    try:
        old = board.get("old1")
        assert old.state is JobState.WAITING and old.key is None and old.parent is None
        keyed = board.post("new", "f", key="k", delay=60, parent="old1")
        assert board.post("new", "f", key="k").id == keyed.id
        assert [j.id for j in board.children("old1")] == [keyed.id]
        assert board.put_schedule("s", {"a": 1}) == 1
    finally:
        board.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    check.close()
