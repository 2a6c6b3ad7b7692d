"""Schema and queries of the SQLite board, and the Job a row holds.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`), every
table keyed by ``namespace`` so that many boards share one file:

``jobs``
    one row a job: ``seq`` (rowid, FIFO order), ``id``, ``name``, ``flow``,
    ``store``/``result``/``details`` (JSON text), ``priority`` (rank 0-4),
    ``state``, times, ``attempts``/``max_attempts``, and the claim: ``owner``,
    ``token`` (fencing token, bumped by every claim), ``claimed_at``,
    ``lease_expires_at``, ``cancel_requested``. Indexes:
    ``(namespace, state, flow, priority, seq)`` serves claims of given flows,
    ``(namespace, state, priority, seq)`` claims of any flow,
    ``(namespace, state, lease_expires_at)`` finds expired leases,
    ``(namespace, finished_at)`` serves retention.
``progress``
    ``(namespace, job_id, atom) -> record`` (JSON text).
``entities``
    ``(namespace, kind, name) -> metadata, last_seen``.
``counters``
    ``(namespace, name) -> value``.
"""

from __future__ import annotations

import json
import logging
import sqlite3

from jobboard import errors
from jobboard.model import Job, JobPriority, JobState

log = logging.getLogger("jobboard.sqlite")

#: ``PRAGMA user_version`` of the schema this module writes.
SCHEMA_VERSION = 1

_PRIORITIES = list(JobPriority)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        flow TEXT NOT NULL,
        store TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        owner TEXT,
        token INTEGER NOT NULL DEFAULT 0,
        claimed_at REAL,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        last_error TEXT,
        details TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (namespace, state, flow, priority, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_order ON jobs (namespace, state, priority, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (namespace, state, lease_expires_at)",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (namespace, finished_at)"
    " WHERE finished_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS progress (
        namespace TEXT NOT NULL,
        job_id TEXT NOT NULL,
        atom TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (namespace, job_id, atom)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS entities (
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        metadata TEXT NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (namespace, kind, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS counters (
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID""",
)

#: The paused flows (created on the first pause, so older files need no upgrade).
SQL_CREATE_PAUSES = """CREATE TABLE IF NOT EXISTS pauses (
    namespace TEXT NOT NULL,
    flow TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (namespace, flow)
) WITHOUT ROWID"""
#: Whether the pauses table exists.
SQL_HAS_PAUSES = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pauses'"

#: The best waiting job of one flow (index ``jobs_claim``).
SQL_BEST_OF_FLOW = (
    "SELECT seq, priority FROM jobs WHERE namespace = ? AND state = 'waiting' AND flow = ?"
    " ORDER BY priority, seq LIMIT 1"
)
#: The best waiting job of any flow (index ``jobs_order``).
SQL_BEST_ANY = (
    "SELECT seq, priority FROM jobs WHERE namespace = ? AND state = 'waiting'"
    " ORDER BY priority, seq LIMIT 1"
)
#: Claims whose lease ran out (index ``jobs_lease``).
SQL_EXPIRED = (
    "SELECT seq, id, token, owner FROM jobs"
    " WHERE namespace = ? AND state = 'claimed' AND lease_expires_at <= ?"
)
#: When the next lease of the namespace runs out.
SQL_NEXT_EXPIRY = "SELECT MIN(lease_expires_at) FROM jobs WHERE namespace = ? AND state = 'claimed'"
#: Finished jobs past retention, a batch at a time (index ``jobs_finished``).
SQL_RETENTION_IDS = (
    "SELECT id FROM jobs WHERE namespace = ? AND finished_at IS NOT NULL AND finished_at <= ?"
    " LIMIT ?"
)
#: Add to one event counter.
SQL_COUNT = (
    "INSERT INTO counters (namespace, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (namespace, name) DO UPDATE SET value = value + excluded.value"
)


def schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version; refuses files this module did not write."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise errors.BoardError(
            f"sqlite board {path!r} has schema version {version}; this version of "
            f"jobboard understands {SCHEMA_VERSION} (upgrade jobboard)"
        )
    if (
        version == 0
        and conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
    ):
        raise errors.BoardError(
            f"sqlite file {path!r} has a 'jobs' table but no board schema version; "
            "it is not a job board database"
        )
    return version


def ensure_schema(conn: sqlite3.Connection, path: str, in_memory: bool) -> None:
    """WAL mode and the schema, idempotently; safe when processes race to do it."""
    schema_version(conn, path)  # refuse a foreign file before changing anything
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal" and not in_memory:
        log.warning(
            "sqlite board %s: journal_mode is %s, not wal (readers will wait for writers)",
            path,
            mode,
        )
    if schema_version(conn, path) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if schema_version(conn, path) == 0:  # nobody created it meanwhile
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def row_job(row: sqlite3.Row, now: float) -> Job:
    """A Job from a row; a claim whose lease ran out reads as waiting."""
    state = JobState(row["state"])
    owner, claimed_at, expires = row["owner"], row["claimed_at"], row["lease_expires_at"]
    if state is JobState.CLAIMED and expires is not None and expires <= now:
        state, owner, claimed_at, expires = JobState.WAITING, None, None, None
    result = row["result"]
    return Job(
        id=row["id"],
        name=row["name"],
        flow=row["flow"],
        store=json.loads(row["store"]),
        priority=_PRIORITIES[row["priority"]],
        state=state,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        seq=row["seq"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        owner=owner,
        token=row["token"],
        claimed_at=claimed_at,
        lease_expires_at=expires,
        cancel_requested=bool(row["cancel_requested"]),
        finished_at=row["finished_at"],
        result=None if result is None else json.loads(result),
        last_error=row["last_error"],
        details=json.loads(row["details"]),
    )
