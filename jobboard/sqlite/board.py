"""SQLite job board (``sqlite:///path/to/board.db``): the embedded default for one host.

Several processes of one host share the file; no server runs. Every operation
is one short transaction (``BEGIN IMMEDIATE`` for writes, so each
read-modify-write is atomic against every other process), the file is in WAL
mode so readers never wait for writers, and ``busy_timeout`` makes writers
queue for the lock instead of failing.

The schema (one table each for jobs, progress, entities and counters, every row
keyed by ``namespace`` so that many boards share one file) and the queries are
in :mod:`jobboard.sqlite.schema`.

Leases: a claim holds until ``lease_expires_at`` (board time: ``time.time()``
of the host). A row ``state='claimed' AND lease_expires_at <= now`` is a
waiting job everywhere: reads report it waiting, and every write transaction
first turns such rows back into waiting rows (counting ``expired``).

Wake-up: SQLite pushes nothing, so a per-board watcher thread polls ``PRAGMA
data_version`` (a few microseconds; it changes when any other connection
commits) with a sleep growing from :attr:`~SqliteBoard.POLL_MIN` to
:attr:`~SqliteBoard.POLL_MAX` while nothing changes and reset on a change. It
runs only while a thread waits in :meth:`~SqliteBoard.wait` or the board
holds claims. On a change it wakes waiters and re-reads the rows of held
claims, so a cancel request or a claim taken away by another process (a
forced abandon, a trash) reaches :meth:`claim_status` and
:meth:`cancel_requested` as local calls, with the poll's latency (at most
``POLL_MAX`` after the other commit). Writes of this board wake its own
waiters at once.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from os import PathLike, fspath
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import unquote, urlsplit

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from jobboard import errors
from jobboard.base import (
    FINISHED_STATES,
    BoardEvent,
    Claim,
    Entity,
    Job,
    JobBoard,
    JobPriority,
    JobRef,
    JobState,
    coerce_options,
)
from jobboard.sqlite.schema import (
    SCHEMA_VERSION,
    SQL_BEST_ANY,
    SQL_BEST_OF_FLOW,
    SQL_COUNT,
    SQL_EXPIRED,
    SQL_NEXT_EXPIRY,
    SQL_RETENTION_IDS,
    ensure_schema,
    row_job,
)

__all__ = ["SqliteBoard"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_EVENT_OF_STATE = {
    JobState.COMPLETE: "consumed",
    JobState.FAILED: "failed",
    JobState.TRASHED: "trashed",
    JobState.CANCELLED: "cancelled",
}
_URL_OPTIONS = frozenset(
    {"name", "namespace", "lease", "retention", "max_payload", "max_attempts", "busy_timeout"}
)
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


class SqliteBoard(JobBoard):
    """A job board in one SQLite file shared by the processes of one host.

    ``path`` is the database file (created with its schema on first connect)
    or ``":memory:"`` for a private in-process board. Safe to use from many
    threads: each operation borrows a pooled connection for one transaction.
    """

    scheme = "sqlite"
    #: ``PRAGMA user_version`` of the schema this module writes.
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION
    #: Seconds a writer waits for the file's write lock before ``BoardUnavailable``.
    BUSY_TIMEOUT: ClassVar[float] = 5.0
    #: Shortest sleep of the change poll (right after a change), in seconds.
    POLL_MIN: ClassVar[float] = 0.005
    #: Longest sleep of the change poll (after a quiet spell); bounds push latency.
    POLL_MAX: ClassVar[float] = 0.15
    #: Factor by which the poll's sleep grows after each quiet poll.
    POLL_GROWTH: ClassVar[float] = 1.5
    #: Lazy retention runs at most this often per board (seconds); ``purge`` always runs it.
    RETENTION_INTERVAL: ClassVar[float] = 2.0
    #: Most finished jobs one retention pass deletes (keeps transactions short).
    RETENTION_BATCH: ClassVar[int] = 500
    #: Deadline (seconds) for retrying a read that met a transient lock conflict.
    READ_RETRY_DEADLINE: ClassVar[float] = 10.0
    #: Idle pooled connections kept open; more are closed when returned.
    MAX_IDLE_CONNECTIONS: ClassVar[int] = 8
    #: Most held claims re-read by one watcher query (SQLite's parameter limit is far above).
    CHECK_CHUNK: ClassVar[int] = 400

    def __init__(
        self,
        path: str | PathLike[str],
        name: str = "default",
        *,
        busy_timeout: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.path = fspath(path)
        if not self.path:
            raise errors.BadURL("sqlite board: a database file path is required")
        self.in_memory = self.path == ":memory:"
        self.busy_timeout = float(self.BUSY_TIMEOUT if busy_timeout is None else busy_timeout)
        if not self.busy_timeout >= 0 or math.isinf(self.busy_timeout):
            raise errors.BadURL(
                f"sqlite board {self.path!r}: option 'busy_timeout' must be >= 0 seconds, "
                f"got {busy_timeout!r}"
            )
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._connect_lock = threading.Lock()
        # ":memory:" is one database per connection: one connection, one user at a time.
        self._gate = threading.Semaphore(1) if self.in_memory else None
        self._state = "new"  # new -> open -> closed
        self._next_sweep = 0.0
        # Wake-up: a generation bumped on every change seen; waiters sleep on _changed.
        self._changed = threading.Condition()
        self._generation = 0
        self._waiters = 0
        self._track_lock = threading.RLock()  # orders _track against the watcher's verdicts
        self._watcher: threading.Thread | None = None
        self._kick = threading.Event()
        self._ending: set[str] = set()  # jobs this board is finishing right now
        #: Number of ``data_version`` polls the watcher made (tests bound it by the schedule).
        self.polls = 0

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``sqlite:///abs/path.db`` (absolute), ``sqlite://rel/path.db`` (relative to the
        working directory) or ``sqlite:///:memory:``; options in the query string."""
        from jobboard import parse_options

        parts = urlsplit(url)
        if parts.scheme.lower() != cls.scheme or "://" not in url:
            raise errors.BadURL(f"not a sqlite board URL: {url!r}")
        raw = unquote(url.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0])
        if raw.lstrip("/") == ":memory:":
            raw = ":memory:"
        elif raw.startswith("//"):  # sqlite:////abs/path, as other tools spell it
            raw = "/" + raw.lstrip("/")
        if not raw or raw == "/":
            raise errors.BadURL(
                f"board URL {url!r}: name the database file, e.g. sqlite:///var/lib/board.db"
            )
        opts = {**parse_options(url), **options}
        unknown = sorted(set(opts) - _URL_OPTIONS)
        if unknown:
            raise errors.BadURL(
                f"board URL {url!r}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_URL_OPTIONS))}"
            )
        opts = coerce_options(opts, url)
        if isinstance(opts.get("busy_timeout"), str):
            try:
                opts["busy_timeout"] = float(opts["busy_timeout"])
            except ValueError as err:
                raise errors.BadURL(
                    f"board URL {url!r}: option 'busy_timeout' must be a number of seconds"
                ) from err
        return cls(raw, opts.pop("name", "default"), **opts)

    def connect(self) -> Self:
        """Open the file, switch it to WAL and create the schema if needed (idempotent)."""
        with self._connect_lock:
            if self._state == "open":
                return self
            conn = self._open_connection()
            try:
                self._setup(conn)
            except BaseException:
                self._discard(conn)
                raise
            with self._pool_lock:
                self._idle.append(conn)
                self._state = "open"
        log.debug("sqlite board %s connected to %s", self.namespace, self.path)
        return self

    def close(self) -> None:
        """Stop the watcher and close every connection this board opened."""
        with self._pool_lock:
            self._state = "closed"
            idle, self._idle = self._idle, []
        self._kick.set()
        with self._changed:
            self._changed.notify_all()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5)
        self._watcher = None
        for conn in idle:
            self._discard(conn)

    @property
    def connected(self) -> bool:
        return self._state == "open"

    def __repr__(self) -> str:
        return f"<SqliteBoard {self.path!r} namespace={self.namespace!r}>"

    # -- connections and transactions ---------------------------------------

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
        row = conn.execute(
            "SELECT * FROM jobs WHERE id = ? AND namespace = ?", (job_id, self.namespace)
        ).fetchone()
        if row is None:
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
        return row

    def _update(self, conn: sqlite3.Connection, seq: int, **columns: Any) -> sqlite3.Row:
        """Set columns of one job row and return the new row."""
        assignments = ", ".join(f"{name} = ?" for name in columns)
        return conn.execute(
            f"UPDATE jobs SET {assignments} WHERE seq = ? RETURNING *", (*columns.values(), seq)
        ).fetchone()

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

    def _sweep(self, conn: sqlite3.Connection, now: float) -> int:
        """Delete finished jobs (and their progress) older than ``retention``."""
        ids = [
            r[0]
            for r in conn.execute(
                SQL_RETENTION_IDS, (self.namespace, now - self.retention, self.RETENTION_BATCH)
            )
        ]
        self._delete_jobs(conn, ids)
        conn.execute(
            "DELETE FROM entities WHERE namespace = ? AND last_seen < ?",
            (self.namespace, now - self.DEFAULT_ENTITY_TTL),
        )
        return len(ids)

    def _delete_jobs(self, conn: sqlite3.Connection, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self.CHECK_CHUNK):
            chunk = ids[start : start + self.CHECK_CHUNK]
            marks = ", ".join("?" * len(chunk))
            args = (self.namespace, *chunk)
            conn.execute(f"DELETE FROM progress WHERE namespace = ? AND job_id IN ({marks})", args)
            conn.execute(f"DELETE FROM jobs WHERE namespace = ? AND id IN ({marks})", args)

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
        self._check_fence(
            job_id, JobState(row["state"]), row["token"], row["owner"], who, token, force
        )
        return row

    # -- producers ----------------------------------------------------------

    def post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        max_attempts: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Job:
        prio, attempts, store_json, details_json = self._validate_post(
            name, flow, store, priority, max_attempts, details
        )
        job_id = uuid.uuid4().hex

        def insert(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = conn.execute(
                "INSERT INTO jobs (id, namespace, name, flow, store, priority, state,"
                " created_at, updated_at, max_attempts, details)"
                " VALUES (?, ?, ?, ?, ?, ?, 'waiting', ?, ?, ?, ?) RETURNING *",
                (
                    job_id,
                    self.namespace,
                    name,
                    flow,
                    store_json,
                    prio.rank,
                    now,
                    now,
                    attempts,
                    details_json,
                ),
            ).fetchone()
            self._count(conn, "posted")
            events.append(BoardEvent("posted", job_id, {"flow": flow, "name": name}))
            return row_job(row, now)

        job, events = self._write("post", insert)
        self._publish(events)
        self._maybe_sweep()
        return job

    def _maybe_sweep(self) -> None:
        """Apply retention at most every ``RETENTION_INTERVAL`` seconds (best effort)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.RETENTION_INTERVAL
        try:
            self._write("retention", lambda conn, t, _events: self._sweep(conn, t))
        except errors.BoardError as err:  # the post itself is done; retention can wait
            log.warning("sqlite board %s: retention postponed: %s", self.path, err)

    def get(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        return self._read("get", lambda conn, now: row_job(self._fetch(conn, job_id), now))

    def iterjobs(
        self,
        only_unclaimed: bool = False,
        ensure_fresh: bool = False,
        *,
        states: Collection[JobState | str] | None = None,
        flow: str | None = None,
    ) -> Iterator[Job]:
        wanted = self._normalise_states(states, only_unclaimed)
        conds: list[str] = []
        if JobState.WAITING in wanted:
            conds.append("state = 'waiting' OR (state = 'claimed' AND lease_expires_at <= :now)")
        if JobState.CLAIMED in wanted:
            conds.append("state = 'claimed' AND lease_expires_at > :now")
        finished = sorted(s.value for s in wanted & FINISHED_STATES)
        if finished:
            conds.append(f"state IN ({', '.join(repr(s) for s in finished)})")
        where = " OR ".join(f"({c})" for c in conds)
        sql = f"SELECT * FROM jobs WHERE namespace = :ns AND ({where})"
        if flow is not None:
            sql += " AND flow = :flow"
        sql += " ORDER BY priority, seq"

        def select(conn: sqlite3.Connection, now: float) -> list[Job]:
            params = {"ns": self.namespace, "now": now, "flow": flow}
            return [row_job(row, now) for row in conn.execute(sql, params)]

        return iter(self._read("iterjobs", select))

    @property
    def job_count(self) -> int:
        return self._read(
            "job_count",
            lambda conn, _now: conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE namespace = ? AND state IN ('waiting', 'claimed')",
                (self.namespace,),
            ).fetchone()[0],
        )

    def cancel(self, job: JobRef) -> Job:
        job_id = self._job_id(job)

        def flag(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fetch(conn, job_id)
            state = JobState(row["state"])
            if state.finished:
                raise errors.InvalidState(
                    f"job {job_id!r} is already {state.value}; nothing to cancel"
                )
            if state is JobState.WAITING:
                row = self._update(
                    conn,
                    row["seq"],
                    state=JobState.CANCELLED.value,
                    updated_at=now,
                    finished_at=now,
                    cancel_requested=1,
                    last_error="cancelled before it started",
                )
                self._count(conn, "cancelled")
                events.append(BoardEvent("cancelled", job_id, {"token": row["token"]}))
            else:
                row = self._update(conn, row["seq"], cancel_requested=1, updated_at=now)
                events.append(BoardEvent("cancel_requested", job_id, {"token": row["token"]}))
            return row_job(row, now)

        updated, events = self._write("cancel", flag)
        self._publish(events)
        return updated

    # -- conductors ---------------------------------------------------------

    def _claim_row(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        who: str,
        lease: float,
        now: float,
        started: float,
        events: list[BoardEvent],
    ) -> Claim | None:
        """Claim a waiting row (inside the write); trash it instead if it is poison."""
        if row["attempts"] >= row["max_attempts"]:
            reason = self._poison_reason(row["attempts"], row["max_attempts"])
            self._update(
                conn,
                row["seq"],
                state=JobState.TRASHED.value,
                updated_at=now,
                finished_at=now,
                last_error=reason,
            )
            self._count(conn, "trashed")
            self._count(conn, "poison")
            events.append(BoardEvent("trashed", row["id"], {"reason": reason, "forced": True}))
            return None
        claimed = self._update(
            conn,
            row["seq"],
            state=JobState.CLAIMED.value,
            owner=who,
            token=row["token"] + 1,
            claimed_at=now,
            lease_expires_at=now + lease,
            attempts=row["attempts"] + 1,
            updated_at=now,
        )
        self._count(conn, "claimed")
        token = claimed["token"]
        events.append(BoardEvent("claimed", row["id"], {"token": token, "owner": who}))
        return Claim(
            job_id=row["id"],
            owner=who,
            token=token,
            lease=lease,
            expires_at=now + lease,
            deadline=started + lease,
            job=row_job(claimed, now),
        )

    def _start_claim(self, claim: Claim, events: list[BoardEvent]) -> Claim:
        """Publish a claim's events in an order that leaves the new claim owned locally."""
        self._publish(e for e in events if e.kind != "claimed")
        with self._track_lock:
            self._track(claim)
        self._publish(e for e in events if e.kind == "claimed")
        self._kick_watcher()
        return claim

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._job_id(job)
        self._check_owner_args(job_id, who, 0, False)
        length = self._lease_for(lease)
        started = self._local_clock()

        def take(
            conn: sqlite3.Connection, now: float, events: list[BoardEvent]
        ) -> Claim | errors.UnclaimableJob:
            row = self._fetch(conn, job_id)
            if row["state"] != JobState.WAITING.value:
                owner = f" by {row['owner']!r}" if row["owner"] else ""
                raise errors.UnclaimableJob(
                    f"job {job_id!r} is {row['state']}{owner}; it cannot be claimed"
                )
            claim = self._claim_row(conn, row, who, length, now, started, events)
            if claim is None:  # trashed as poison: commit that, then refuse
                return errors.UnclaimableJob(
                    f"job {job_id!r} was trashed: "
                    f"{self._poison_reason(row['attempts'], row['max_attempts'])}"
                )
            return claim

        outcome, events = self._write("claim", take)
        if isinstance(outcome, errors.UnclaimableJob):
            self._publish(events)
            raise outcome
        return self._start_claim(outcome, events)

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        self._check_owner_args("?", who, 0, False)
        length = self._lease_for(lease)
        wanted = None if flows is None else sorted(set(flows))
        started = self._local_clock()

        def take(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Claim | None:
            while True:
                seq = self._best_waiting(conn, wanted)
                if seq is None:
                    return None
                row = conn.execute("SELECT * FROM jobs WHERE seq = ?", (seq,)).fetchone()
                claim = self._claim_row(conn, row, who, length, now, started, events)
                if claim is not None:
                    return claim

        if wanted == []:
            return None
        claim, events = self._write("claim_next", take)
        if claim is None:
            self._publish(events)
            return None
        return self._start_claim(claim, events)

    def _best_waiting(self, conn: sqlite3.Connection, flows: list[str] | None) -> int | None:
        """The seq of the best waiting job: one index probe per flow (or one for any flow)."""
        if flows is None:
            row = conn.execute(SQL_BEST_ANY, (self.namespace,)).fetchone()
            return None if row is None else row[0]
        best: tuple[int, int] | None = None
        for flow in flows:
            row = conn.execute(SQL_BEST_OF_FLOW, (self.namespace, flow)).fetchone()
            if row is not None and (best is None or (row[1], row[0]) < best):
                best = (row[1], row[0])
        return None if best is None else best[1]

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        length = self._lease_for(lease)
        claims = list(claims)
        if not claims:
            return {}
        started = self._local_clock()

        def extend(
            conn: sqlite3.Connection, now: float, events: list[BoardEvent]
        ) -> dict[str, Claim | None]:
            out: dict[str, Claim | None] = {}
            for claim in claims:
                row = conn.execute(
                    "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND namespace = ?"
                    " AND state = 'claimed' AND token = ? AND owner = ?"
                    " RETURNING cancel_requested",
                    (now + length, claim.job_id, self.namespace, claim.token, claim.owner),
                ).fetchone()
                if row is None:
                    out[claim.job_id] = None
                    continue
                if row[0]:
                    self._mark_cancel(claim.job_id)
                out[claim.job_id] = replace(
                    claim, lease=length, expires_at=now + length, deadline=started + length
                )
            return out

        out, events = self._write("renew", extend)
        self._publish(events)
        self._apply_renewals(out)
        return out

    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        def store(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> None:
            self._fenced(conn, job_id, who, token, False)
            conn.execute(
                "INSERT INTO progress (namespace, job_id, atom, record) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, job_id, atom) DO UPDATE SET record = excluded.record",
                (self.namespace, job_id, atom_name, encoded),
            )

        _, events = self._write("save_progress", store)
        self._publish(events)

    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._job_id(job)

        def select(conn: sqlite3.Connection, _now: float) -> dict[str, dict[str, Any]]:
            self._fetch(conn, job_id)
            rows = conn.execute(
                "SELECT atom, record FROM progress WHERE namespace = ? AND job_id = ?",
                (self.namespace, job_id),
            )
            return {atom: json.loads(record) for atom, record in rows}

        return self._read("load_progress", select)

    def _finish(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        state: JobState,
        force: bool,
        result_json: str | None,
        error: str | None,
        event: str,
    ) -> Job:
        def end(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fenced(conn, job_id, who, token, force)
            done = self._update(
                conn,
                row["seq"],
                state=state.value,
                owner=None,
                lease_expires_at=None,
                updated_at=now,
                finished_at=now,
                result=result_json,
                last_error=error if error is not None else row["last_error"],
            )
            self._count(conn, event)
            events.append(
                BoardEvent(
                    event,
                    job_id,
                    {"token": row["token"], "owner": who, "forced": force, "flow": row["flow"]},
                )
            )
            return row_job(done, now)

        with self._ending_job(job_id):
            done, events = self._write(event, end)
            self._untrack(job_id)
        self._publish(events)
        return done

    @contextmanager
    def _ending_job(self, job_id: str) -> Iterator[None]:
        """Mark a job this board is ending itself, so the watcher does not report it lost."""
        with self._local_lock:
            self._ending.add(job_id)
        try:
            yield
        finally:
            with self._local_lock:
                self._ending.discard(job_id)

    def _release_claim(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        reason: str | None,
        force: bool,
        refund: bool = False,
    ) -> Job:
        def release(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fenced(conn, job_id, who, token, force)
            if row["state"] != JobState.CLAIMED.value:
                raise errors.InvalidState(f"job {job_id!r} is not claimed; nothing to abandon")
            released = self._update(
                conn,
                row["seq"],
                state=JobState.WAITING.value,
                owner=None,
                claimed_at=None,
                lease_expires_at=None,
                updated_at=now,
                last_error=reason if reason is not None else row["last_error"],
                attempts=max(0, row["attempts"] - 1) if refund else row["attempts"],
            )
            self._count(conn, "abandoned")
            events.append(
                BoardEvent(
                    "abandoned",
                    job_id,
                    {"token": row["token"], "owner": who, "forced": force, "flow": row["flow"]},
                )
            )
            return row_job(released, now)

        with self._ending_job(job_id):
            released, events = self._write("abandon", release)
            self._untrack(job_id)
        self._publish(events)
        return released

    # -- waiting ------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        wanted = None if flows is None else sorted(set(flows))
        with self._changed:
            self._waiters += 1
        self._kick_watcher()
        try:
            while True:
                with self._changed:
                    seen = self._generation
                ready, next_expiry = self._read(
                    "wait", lambda conn, now: self._waiting_state(conn, now, wanted)
                )
                if ready:
                    return True
                pause = None if deadline is None else deadline - time.monotonic()
                if pause is not None and pause <= 0:
                    return False
                if next_expiry is not None:  # an expiring lease makes a job waiting, silently
                    until_expiry = max(0.0, next_expiry - time.time()) + self.POLL_MIN
                    pause = until_expiry if pause is None else min(pause, until_expiry)
                with self._changed:
                    self._changed.wait_for(
                        lambda seen=seen: self._generation != seen or self._state == "closed",
                        pause,
                    )
                    if self._state == "closed":
                        return False
        finally:
            with self._changed:
                self._waiters -= 1

    def _waiting_state(
        self, conn: sqlite3.Connection, now: float, flows: list[str] | None
    ) -> tuple[bool, float | None]:
        """(a job of ``flows`` is claimable now, the next lease expiry of the namespace)."""
        if flows is None:
            if conn.execute(SQL_BEST_ANY, (self.namespace,)).fetchone() is not None:
                return True, None
        elif any(
            conn.execute(SQL_BEST_OF_FLOW, (self.namespace, flow)).fetchone() is not None
            for flow in flows
        ):
            return True, None
        sql = SQL_EXPIRED
        params: tuple[Any, ...] = (self.namespace, now)
        if flows is not None:  # few expired rows to filter: the index range is expired leases
            sql += f" AND flow IN ({', '.join('?' * len(flows))})"
            params += tuple(flows)
        if conn.execute(sql + " LIMIT 1", params).fetchone() is not None:
            return True, None
        next_expiry = conn.execute(SQL_NEXT_EXPIRY, (self.namespace,)).fetchone()[0]
        return False, next_expiry if next_expiry is None or next_expiry > now else None

    def _bump(self) -> None:
        """Wake this board's waiters: something changed."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _kick_watcher(self) -> None:
        """Start the watcher if needed and cut its current sleep short."""
        if self.in_memory:
            return  # every change of a private database goes through this board
        with self._pool_lock:
            if self._state != "open":
                return
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(
                    target=self._watch, name=f"sqlite-board-watch-{self.namespace}", daemon=True
                )
                self._watcher.start()
        self._kick.set()

    def _watch_wanted(self) -> bool:
        return self._waiters > 0 or bool(self._held)

    def _watch(self) -> None:
        """The watcher thread: poll ``data_version`` adaptively while anyone needs pushes."""
        conn: sqlite3.Connection | None = None
        last: int | None = None
        interval = self.POLL_MIN
        while self._state == "open":
            try:
                if not self._watch_wanted():
                    self._kick.wait()  # idle: no waiter, no claim; sleep until kicked
                    self._kick.clear()
                    last, interval = None, self.POLL_MIN
                    continue
                if conn is None:
                    conn = self._open_connection()
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                self.polls += 1
                if version != last:
                    if last is not None:
                        self._bump()
                        interval = self.POLL_MIN
                    # On a change, and once after resuming (a change may have been missed).
                    if self._held:
                        self._check_held(conn)
                    last = version
                else:
                    interval = min(interval * self.POLL_GROWTH, self.POLL_MAX)
            except Exception:  # the watcher must survive a bad moment of the file
                log.warning("sqlite board %s: change poll failed", self.path, exc_info=True)
                interval = self.POLL_MAX
            if self._kick.wait(interval):
                self._kick.clear()
        if conn is not None:
            self._discard(conn)

    def _check_held(self, conn: sqlite3.Connection) -> None:
        """Re-read held claims; publish lost claims and cancel requests as local events."""
        with self._local_lock:  # claims known lost or being ended here need no news
            skip = self._ending | self._lost
            held = [job_id for job_id in self._held if job_id not in skip]
        rows: list[sqlite3.Row] = []
        now = time.time()
        for start in range(0, len(held), self.CHECK_CHUNK):
            chunk = held[start : start + self.CHECK_CHUNK]
            rows += conn.execute(
                "SELECT id, state, owner, token, cancel_requested, lease_expires_at FROM jobs"
                f" WHERE namespace = ? AND id IN ({', '.join('?' * len(chunk))})",
                (self.namespace, *chunk),
            ).fetchall()
        found = {row["id"]: row for row in rows}
        with self._track_lock:  # a claim tracked meanwhile is judged against its own token
            for job_id in held:
                claim = self._held.get(job_id)
                if claim is None or job_id in self._ending:
                    continue
                row = found.get(job_id)
                event = _verdict(claim, row, now)
                if event is not None:
                    self._emit(event)
                if (
                    row is not None
                    and row["cancel_requested"]
                    and row["token"] >= claim.token
                    and job_id not in self._cancel_flags
                ):
                    self._emit(BoardEvent("cancel_requested", job_id, {"token": row["token"]}))

    # -- entities -----------------------------------------------------------

    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        encoded = self._encode(dict(metadata or {}), "metadata", name)
        self._write(
            "register_entity",
            lambda conn, now, _events: conn.execute(
                "INSERT INTO entities (namespace, kind, name, metadata, last_seen)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, kind, name)"
                " DO UPDATE SET metadata = excluded.metadata, last_seen = excluded.last_seen",
                (self.namespace, kind, name, encoded, now),
            ),
        )

    def unregister_entity(self, name: str, kind: str = "conductor") -> None:
        self._write(
            "unregister_entity",
            lambda conn, _now, _events: conn.execute(
                "DELETE FROM entities WHERE namespace = ? AND kind = ? AND name = ?",
                (self.namespace, kind, name),
            ),
        )

    def iter_entities(self, kind: str = "conductor") -> list[Entity]:
        def select(conn: sqlite3.Connection, now: float) -> list[Entity]:
            rows = conn.execute(
                "SELECT name, metadata, last_seen FROM entities"
                " WHERE namespace = ? AND kind = ? AND last_seen >= ? ORDER BY name",
                (self.namespace, kind, now - self.DEFAULT_ENTITY_TTL),
            )
            return [Entity(name, kind, json.loads(meta), seen) for name, meta, seen in rows]

        return self._read("iter_entities", select)

    # -- operators ----------------------------------------------------------

    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        names = sorted(s.value for s in wanted)

        def delete(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> int:
            self._sweep(conn, now)
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE namespace = ? AND finished_at IS NOT NULL"
                    f" AND finished_at <= ? AND state IN ({', '.join('?' * len(names))})",
                    (self.namespace, now - older_than, *names),
                )
            ]
            self._delete_jobs(conn, ids)
            if ids:
                self._count(conn, "purged", len(ids))
                events.append(BoardEvent("purged", None, {"count": len(ids)}))
            return len(ids)

        count, events = self._write("purge", delete)
        self._next_sweep = time.monotonic() + self.RETENTION_INTERVAL
        self._publish(events)
        return count

    def counters(self) -> dict[str, int]:
        return self._read(
            "counters",
            lambda conn, _now: {
                name: value
                for name, value in conn.execute(
                    "SELECT name, value FROM counters WHERE namespace = ?", (self.namespace,)
                )
            },
        )

    def stats(self) -> dict[str, Any]:
        """As :meth:`JobBoard.stats`, computed by one grouped query instead of a listing."""

        def select(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT flow, CASE WHEN state = 'claimed' AND lease_expires_at <= :now"
                " THEN 'waiting' ELSE state END AS s, COUNT(*), MIN(created_at)"
                " FROM jobs WHERE namespace = :ns GROUP BY flow, s",
                {"ns": self.namespace, "now": now},
            ).fetchall()
            counters = {
                name: value
                for name, value in conn.execute(
                    "SELECT name, value FROM counters WHERE namespace = ?", (self.namespace,)
                )
            }
            per_state = {s.value: 0 for s in JobState}
            per_flow: dict[str, dict[str, int]] = {}
            oldest_created: float | None = None
            for flow, state, count, created in rows:
                per_state[state] += count
                per_flow.setdefault(flow, {})[state] = count
                if state == JobState.WAITING.value:
                    oldest_created = (
                        created if oldest_created is None else min(oldest_created, created)
                    )
            return {
                "states": per_state,
                "flows": per_flow,
                "oldest_waiting_age": None if oldest_created is None else now - oldest_created,
                "counters": counters,
            }

        return self._read("stats", select)


def _verdict(claim: Claim, row: sqlite3.Row | None, now: float) -> BoardEvent | None:
    """The event telling that ``claim`` is gone, judged from the job's current row, or None.

    A row older than the claim (a smaller token: read before the claim was
    made) proves nothing and yields None.
    """
    job_id = claim.job_id
    if row is None:
        return BoardEvent("trashed", job_id, {"token": claim.token, "forced": True, "gone": True})
    token, state = row["token"], JobState(row["state"])
    if token < claim.token:
        return None
    if state is JobState.CLAIMED:
        if token != claim.token or row["owner"] != claim.owner:
            return BoardEvent("claimed", job_id, {"token": token, "owner": row["owner"]})
        expires = row["lease_expires_at"]
        if expires is not None and expires <= now:
            return BoardEvent("expired", job_id, {"token": token, "owner": claim.owner})
        return None
    kind = "abandoned" if state is JobState.WAITING else _EVENT_OF_STATE[state]
    return BoardEvent(kind, job_id, {"token": token, "owner": row["owner"], "forced": True})
