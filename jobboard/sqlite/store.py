"""Connections and transactions of the SQLite board, and the row helpers writes share.

The bottom layer of :class:`jobboard.sqlite.SqliteBoard` (which sets up the
state declared here). Each operation borrows a pooled connection for one
short transaction: ``BEGIN IMMEDIATE`` for writes, so that every
read-modify-write is atomic against every other process, plain ``BEGIN`` for
reads, which retry transient lock conflicts until a deadline. Every write
first turns claims whose lease ran out back into waiting jobs. sqlite3
errors are translated at this boundary.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.model import BoardEvent
from jobboard.sqlite.schema import SQL_COUNT, SQL_EXPIRED, ensure_schema, stored_state

__all__ = ["SqliteStore"]

log = logging.getLogger("jobboard.sqlite")

T = TypeVar("T")

# Primary SQLite result codes that matter at the boundary.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26


def _primary_code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_transient(err: BaseException) -> bool:
    """A lock conflict that a later attempt may not meet (safe to retry for reads)."""
    if not isinstance(err, sqlite3.OperationalError):
        return False
    code = _primary_code(err)
    if code is not None:
        return code in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(err).lower()
    return "locked" in text or "busy" in text



class SqliteStore(JobBoard):
    """The connection pool of one board file, and its transactions."""

    #: Seconds a writer waits for the file's write lock before ``BoardUnavailable``.
    BUSY_TIMEOUT: ClassVar[float] = 5.0
    #: Deadline (seconds) for retrying a read that met a transient lock conflict.
    READ_RETRY_DEADLINE: ClassVar[float] = 10.0
    #: Idle pooled connections kept open; more are closed when returned.
    MAX_IDLE_CONNECTIONS: ClassVar[int] = 8

    path: str
    in_memory: bool
    busy_timeout: float
    _pool_lock: threading.Lock
    _idle: list[sqlite3.Connection]
    _gate: threading.Semaphore | None
    _state: str

    def _bump(self) -> None:
        """Tell this board's waiters that something changed (see the watcher layer)."""

    def _open_connection(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,  # sets the connection's busy_timeout
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # pooled: used by one thread at a time
            )
        except sqlite3.Error as err:
            raise self._translate("connect", err) from err
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as err:
            self._discard(conn)
            raise self._translate("connect", err) from err
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, idempotently; safe when processes race to do it."""
        for attempt in self._retrying():
            with attempt:
                try:
                    ensure_schema(conn, self.path, self.in_memory)
                except sqlite3.Error as err:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if _is_transient(err):
                        raise
                    raise self._translate("connect", err) from err

    def _acquire(self, op: str) -> sqlite3.Connection:
        if self._state == "new":
            self.connect()
        if self._gate is not None:
            self._gate.acquire()
        with self._pool_lock:
            if self._state == "closed":
                if self._gate is not None:
                    self._gate.release()
                raise errors.BoardUnavailable(
                    f"sqlite board {self.path!r}: {op} called on a closed board"
                )
            if self._idle:
                return self._idle.pop()
        return self._open_connection()

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            keep = self._state != "closed" and (
                self.in_memory or len(self._idle) < self.MAX_IDLE_CONNECTIONS
            )
            if keep:
                self._idle.append(conn)
        if self._gate is not None:
            self._gate.release()
        if not keep:
            self._discard(conn)

    def _discard(self, conn: sqlite3.Connection) -> None:
        try:
            conn.close()
        except sqlite3.Error:  # pragma: no cover - closing a broken connection
            log.debug("closing a sqlite connection failed", exc_info=True)

    @contextmanager
    def _transaction(self, op: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction on a pooled connection; sqlite3 errors surface untranslated."""
        conn = self._acquire(op)
        healthy = True
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        healthy = False
                raise
        except sqlite3.Error as err:
            healthy = healthy and _primary_code(err) not in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
            raise
        finally:
            if healthy or self.in_memory:  # the one connection of ":memory:" is the database
                self._release(conn)
            else:
                self._discard(conn)

    def _retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_delay(self.READ_RETRY_DEADLINE),
            wait=wait_random_exponential(multiplier=0.005, max=0.25),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )

    def _read(self, op: str, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run a read-only transaction, retrying transient lock conflicts until a deadline."""
        try:
            for attempt in self._retrying():
                with attempt, self._transaction(op, write=False) as conn:
                    return fn(conn, time.time())
        except sqlite3.Error as err:
            raise self._translate(op, err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(
        self, op: str, fn: Callable[[sqlite3.Connection, float, list[BoardEvent]], T]
    ) -> tuple[T, list[BoardEvent]]:
        """Run one ``BEGIN IMMEDIATE`` transaction: reap expired leases, then ``fn``.

        Not retried: a write that waited out the busy timeout is reported as
        ``BoardUnavailable``. Returns ``fn``'s value and the events to publish.
        """
        events: list[BoardEvent] = []
        try:
            with self._transaction(op, write=True) as conn:
                now = time.time()
                self._reap(conn, now, events)
                value = fn(conn, now, events)
        except sqlite3.Error as err:
            raise self._translate(op, err) from err
        self._bump()
        return value, events

    def _translate(self, op: str, err: sqlite3.Error) -> errors.BoardError:
        where = f"sqlite board {self.path!r}: {op} failed"
        code = _primary_code(err)
        if _is_transient(err):
            return errors.BoardUnavailable(
                f"{where}: the database stayed locked past the busy timeout "
                f"of {self.busy_timeout:g}s ({err})"
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
            code is None and isinstance(err, sqlite3.DatabaseError) and "database" in str(err)
        ):
            return errors.BoardError(
                f"{where}: the file is not a usable board database (corrupt or not SQLite): {err}"
            )
        if isinstance(err, sqlite3.OperationalError):
            return errors.BoardUnavailable(f"{where}: {err}")
        return errors.BoardError(f"{where}: {err}")


    # -- row helpers --------------------------------------------------------

    def _fetch(self, conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM jobs WHERE id = ? AND namespace = ?", (job_id, self.namespace)
        ).fetchone()
        if row is None:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        return row

    def _update(self, conn: sqlite3.Connection, seq: int, **columns: Any) -> sqlite3.Row:
        """Set columns of one job row and return the new row."""
        assignments = ", ".join(f"{name} = ?" for name in columns)
        row: sqlite3.Row = conn.execute(
            f"UPDATE jobs SET {assignments} WHERE seq = ? RETURNING *", (*columns.values(), seq)
        ).fetchone()
        return row

    def _count(self, conn: sqlite3.Connection, key: str, n: int = 1) -> None:
        conn.execute(SQL_COUNT, (self.namespace, key, n))

    def _reap(self, conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> None:
        """Turn claims whose lease ran out back into waiting jobs (inside a write)."""
        rows = conn.execute(SQL_EXPIRED, (self.namespace, now)).fetchall()
        for row in rows:
            conn.execute(
                "UPDATE jobs SET state = 'waiting', owner = NULL, claimed_at = NULL,"
                " lease_expires_at = NULL, updated_at = ?, last_error = ? WHERE seq = ?",
                (now, f"lease of {row['owner']} expired", row["seq"]),
            )
            events.append(
                BoardEvent("expired", row["id"], {"token": row["token"], "owner": row["owner"]})
            )
        if rows:
            self._count(conn, "expired", len(rows))


    def _publish(self, events: Iterable[BoardEvent]) -> None:
        for event in events:
            self._emit(event)

    def _fenced(
        self, conn: sqlite3.Connection, job_id: str, who: str, token: int | None, force: bool
    ) -> sqlite3.Row:
        """The job's row if ``who``/``token`` own it (or ``force``); raise otherwise.

        Runs inside the write transaction, after expired leases were reaped.
        """
        row = self._fetch(conn, job_id)
        try:
            state = stored_state(row)
        except errors.CorruptJob:
            if force:  # an operator may end an unreadable job, whatever it says
                return row
            raise
        self._check_fence(job_id, state, row["token"], row["owner"], who, token, force)
        return row
