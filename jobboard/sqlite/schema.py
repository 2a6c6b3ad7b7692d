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
    ``(namespace, finished_at)`` serves retention. Since version 2:
    ``dedupe_key`` (unique per namespace, index ``jobs_key``), ``not_before``
    (due time of a ``scheduled`` job; index ``jobs_due`` on scheduled rows
    serves promotion and the next due time) and ``parent`` (index
    ``jobs_parent`` lists a job's children).
``progress``
    ``(namespace, job_id, atom) -> record`` (JSON text).
``entities``
    ``(namespace, kind, name) -> metadata, last_seen``.
``counters``
    ``(namespace, name) -> value``.
``schedules`` (version 2)
    ``(namespace, name) -> record`` (JSON text), ``version`` (compare-and-set).

A file of an older version is brought up to date by :data:`MIGRATIONS` on
connect, in one transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from jobboard import errors
from jobboard.model import Job, JobPriority, JobState

log = logging.getLogger("jobboard.sqlite")

#: ``PRAGMA user_version`` of the schema this module writes.
SCHEMA_VERSION = 2

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

#: Statements bringing a file to each version from the one before (version 1 is ``SCHEMA``).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE jobs ADD COLUMN dedupe_key TEXT",
        "ALTER TABLE jobs ADD COLUMN not_before REAL",
        "ALTER TABLE jobs ADD COLUMN parent TEXT",
        "CREATE UNIQUE INDEX IF NOT EXISTS jobs_key ON jobs (namespace, dedupe_key)"
        " WHERE dedupe_key IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS jobs_due ON jobs (namespace, state, not_before)"
        " WHERE state = 'scheduled'",
        "CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (namespace, parent)"
        " WHERE parent IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS schedules (
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            record TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (namespace, name)
        ) WITHOUT ROWID""",
    ),
}

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
        version = schema_version(conn, path)  # read again: another process may have done it
        if version == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def row_job(row: sqlite3.Row, now: float) -> Job:
    """A Job from a row; a claim whose lease ran out, and a scheduled job whose
    due time came, read as waiting.

    Raises :class:`~jobboard.errors.CorruptJob` naming the field when the
    record cannot be read (see :func:`readable_job` for listings).
    """
    state = _read(row, "state", JobState)
    owner, claimed_at, expires = row["owner"], row["claimed_at"], row["lease_expires_at"]
    if state is JobState.CLAIMED and expires is not None and expires <= now:
        state, owner, claimed_at, expires = JobState.WAITING, None, None, None
    if state is JobState.SCHEDULED and row["not_before"] is not None and row["not_before"] <= now:
        state = JobState.WAITING
    return Job(
        id=row["id"],
        name=_read(row, "name", _text),
        flow=_read(row, "flow", _text),
        store=_read(row, "store", _json_object),
        priority=_read(row, "priority", _priority),
        state=state,
        created_at=_read(row, "created_at", float),
        updated_at=_read(row, "updated_at", float),
        seq=row["seq"],
        attempts=_read(row, "attempts", _integer),
        max_attempts=_read(row, "max_attempts", _integer),
        owner=owner,
        token=_read(row, "token", _integer),
        claimed_at=claimed_at,
        lease_expires_at=expires,
        cancel_requested=bool(row["cancel_requested"]),
        finished_at=row["finished_at"],
        result=_read(row, "result", _json_or_none),
        last_error=row["last_error"],
        details=_read(row, "details", _json_object),
        key=row["dedupe_key"],
        not_before=row["not_before"],
        parent=row["parent"],
    )


def readable_job(row: sqlite3.Row, now: float) -> Job:
    """:func:`row_job`, or for a record that cannot be read a stand-in marked
    unreadable: what can be read of it, an empty store, the reason in
    ``details["unreadable"]`` and ``last_error``. Listings and the replies of
    writes that took effect use it, so one bad record never breaks them."""
    try:
        return row_job(row, now)
    except errors.CorruptJob as err:
        return unreadable_job(row, str(err))


def unreadable_job(row: sqlite3.Row, reason: str) -> Job:
    """The stand-in of a job whose record cannot be read (see :func:`readable_job`).

    Its state is the stored one when known, else waiting (an unfinished job an
    operator can trash, then purge).
    """

    def soft(name: str, convert: Callable[[Any], T], default: T) -> T:
        try:
            return convert(row[name])
        except _DECODING_ERRORS:
            return default

    reason = errors.capped(reason, _REASON_LIMIT)
    return Job(
        id=row["id"],
        name=errors.capped(soft("name", _text, "?")),
        flow=errors.capped(soft("flow", _text, "?")),
        store={},
        priority=soft("priority", _priority, JobPriority.NORMAL),
        state=soft("state", JobState, JobState.WAITING),
        created_at=soft("created_at", float, 0.0),
        updated_at=soft("updated_at", float, 0.0),
        seq=row["seq"],
        attempts=soft("attempts", _integer, 0),
        max_attempts=soft("max_attempts", _integer, 1),
        owner=row["owner"] if isinstance(row["owner"], str) else None,
        token=soft("token", _integer, 0),
        finished_at=soft("finished_at", float, None),
        last_error=f"unreadable record: {reason}",
        details={"unreadable": reason},
    )


def stored_state(row: sqlite3.Row) -> JobState:
    """The row's state; ``CorruptJob`` naming it when it is not one of the states."""
    return _read(row, "state", JobState)


T = TypeVar("T")

#: What a decoder raises on a bad stored value.
_DECODING_ERRORS = (ValueError, TypeError, IndexError, RecursionError)
#: Longest reason kept in an unreadable job's stand-in.
_REASON_LIMIT = 300


def _read(row: sqlite3.Row, name: str, convert: Callable[[Any], T]) -> T:
    """``convert(row[name])``; ``CorruptJob`` naming the field and the job otherwise."""
    try:
        return convert(row[name])
    except _DECODING_ERRORS as err:
        raise errors.CorruptJob(
            f"job {errors.shown(row['id'])}: stored field {name!r} cannot be read "
            f"({type(err).__name__}: {errors.capped(str(err))}); got "
            f"{errors.shown(row[name])}",
            field=name,
            job=row["id"],
        ) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text but {type(value).__name__}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer but {type(value).__name__}")
    return value


def _priority(value: Any) -> JobPriority:
    rank = _integer(value)
    if not 0 <= rank < len(_PRIORITIES):
        raise ValueError(f"priority rank must be 0-{len(_PRIORITIES) - 1}")
    return _PRIORITIES[rank]


def _json_object(value: Any) -> dict[str, Any]:
    decoded = json.loads(_text(value))
    if not isinstance(decoded, dict):
        raise TypeError(f"not a JSON object but {type(decoded).__name__}")
    return decoded


def _json_or_none(value: Any) -> Any:
    return None if value is None else json.loads(_text(value))
