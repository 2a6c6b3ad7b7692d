"""SQLite job board (``sqlite:///path/to/board.db``): the embedded default for one host.

Several processes of one host share the file; no server runs. Every operation
is one short transaction (``BEGIN IMMEDIATE`` for writes, so each
read-modify-write is atomic against every other process), the file is in WAL
mode so readers never wait for writers, and ``busy_timeout`` makes writers
queue for the lock instead of failing.


The schema (one table each for jobs, progress, entities and counters, every row
keyed by ``namespace`` so that many boards share one file) and the queries are
in :mod:`jobboard.sqlite.schema`. The board is built in layers, one module
each, every layer using the ones below it:

* ``store``: the connection pool, transactions, error translation, row helpers;
* ``watcher``: waiting for jobs, and the ``data_version`` watcher thread;
* ``reads``: jobs, listings, progress, counters, statistics;
* ``writes``: fenced writes (progress, finish, abandon) and cancel;
* ``claims``: claiming and renewing;
* ``producers``: promotion of scheduled jobs, dedupe keys, children, waking
  ``wait_for``, and the record store;
* this module: the tunables, state and life cycle, posting, entities and retention.

Leases: a claim holds until ``lease_expires_at`` (board time: ``time.time()``
of the host). A row ``state='claimed' AND lease_expires_at <= now`` is a
waiting job everywhere: reads report it waiting, and every write transaction
first turns such rows back into waiting rows (counting ``expired``).

Wake-up: SQLite pushes nothing, so a per-board watcher thread reads ``PRAGMA
data_version`` (a few microseconds; it changes when any other connection
commits). While a thread waits in :meth:`~SqliteBoard.wait`, inotify on the
database's directory (Linux; :mod:`jobboard.sqlite.wakeup`) wakes it when any
process of the host writes the file, so a post reaches an idle conductor in
about a millisecond; otherwise (only claims to watch, or no inotify) it polls
with a sleep growing from :attr:`~SqliteBoard.POLL_MIN` to
:attr:`~SqliteBoard.POLL_MAX` while nothing changes. It runs only while a thread
waits or the board holds claims not known lost. On a change it wakes waiters
and re-reads the rows of held claims, so a cancel request or a claim taken away
by another process (a forced abandon, a trash) reaches :meth:`claim_status`
and :meth:`cancel_requested` as local calls, with the poll's latency (at most
``POLL_MAX`` after the other commit). Writes of this board wake its own
waiters at once. Idle boards of one host queue on lock files beside the
database (:mod:`jobboard.sqlite.queue`): only the head of a queue arms inotify,
so a commit wakes one idle board, not all.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from os import PathLike, fspath
from typing import Any, ClassVar, Self
from urllib.parse import unquote, urlsplit

from jobboard import errors
from jobboard.changes import NewJob
from jobboard.model import BoardEvent, Entity, Job, JobState
from jobboard.sqlite.producers import SqliteProducers
from jobboard.sqlite.schema import (
    SCHEMA_VERSION,
    SQL_CREATE_PAUSES,
    SQL_HAS_PAUSES,
    SQL_RETENTION_IDS,
    row_job,
)
from jobboard.sqlite.store import log
from jobboard.urls import coerce_options, parse_options

__all__ = ["SqliteBoard"]

_URL_OPTIONS = frozenset(
    {"name", "namespace", "lease", "retention", "max_payload", "max_attempts", "busy_timeout"}
)


class SqliteBoard(SqliteProducers):
    """A job board in one SQLite file shared by the processes of one host.

    ``path`` is the database file (created with its schema on first connect)
    or ``":memory:"`` for a private in-process board. Safe to use from many
    threads: each operation borrows a pooled connection for one transaction.
    """

    scheme = "sqlite"
    #: ``PRAGMA user_version`` of the schema this module writes.
    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION
    #: Lazy retention runs at most this often per board (seconds); ``purge`` always runs it.
    RETENTION_INTERVAL: ClassVar[float] = 2.0
    #: Most finished jobs one retention pass deletes (keeps transactions short).
    RETENTION_BATCH: ClassVar[int] = 500

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
        self._idle = []
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
        self._watcher = None
        self._kick = threading.Event()
        self._ending = set()  # jobs this board is finishing right now
        self._job_watchers = []  # wake-ups of wait_for calls (see producers)
        #: Number of ``data_version`` polls the watcher made (tests bound it by the schedule).
        self.polls = 0

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``sqlite:///abs/path.db`` (absolute), ``sqlite://rel/path.db`` (relative to the
        working directory) or ``sqlite:///:memory:``; options in the query string."""
        parts = urlsplit(url)
        if parts.scheme.lower() != cls.scheme or "://" not in url:
            raise errors.BadURL(f"not a sqlite board URL: {errors.shown(url)}")
        raw = unquote(url.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0])
        if raw.lstrip("/") == ":memory:":
            raw = ":memory:"
        elif raw.startswith("//"):  # sqlite:////abs/path, as other tools spell it
            raw = "/" + raw.lstrip("/")
        if not raw or raw == "/":
            raise errors.BadURL(
                f"board URL {errors.shown(url)}: name the database file, e.g. sqlite:///var/lib/board.db"
            )
        opts = {**parse_options(url), **options}
        unknown = sorted(set(opts) - _URL_OPTIONS)
        if unknown:
            raise errors.BadURL(
                f"board URL {errors.shown(url)}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_URL_OPTIONS))}"
            )
        opts = coerce_options(opts, url, floats=("busy_timeout",))
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
        if self._queue is not None:
            self._queue.close()
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


    # -- producers ----------------------------------------------------------

    def _post(self, new: NewJob) -> Job:
        job_id = uuid.uuid4().hex

        def insert(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            if new.key is not None:  # the write lock is held: nobody posts in between
                existing = self._keyed(conn, new.key)
                if existing is not None:
                    return row_job(existing, now)
            due = new.due(now)
            row = conn.execute(
                "INSERT INTO jobs (id, namespace, name, flow, store, priority, state,"
                " created_at, updated_at, max_attempts, details, dedupe_key, not_before, parent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (
                    job_id,
                    self.namespace,
                    new.name,
                    new.flow,
                    new.store_json,
                    new.priority.rank,
                    new.state(now).value,
                    now,
                    now,
                    new.max_attempts,
                    new.details_json,
                    new.key,
                    due,
                    new.parent,
                ),
            ).fetchone()
            self._count(conn, "posted")
            events.append(new.event(job_id, due))
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


    # -- flow pauses --------------------------------------------------------

    def _read_pauses(self) -> dict[str, str]:
        def select(conn: sqlite3.Connection, _now: float) -> dict[str, str]:
            if not conn.execute(SQL_HAS_PAUSES).fetchone():
                return {}  # a file no pause was ever written to
            rows = conn.execute("SELECT flow, note FROM pauses WHERE namespace = ?", (self.namespace,))
            return dict(rows.fetchall())

        return self._read("paused_flows", select)

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        def write(conn: sqlite3.Connection, _now: float, _events: list[BoardEvent]) -> bool:
            conn.execute(SQL_CREATE_PAUSES)  # files made before pauses existed lack the table
            key = (self.namespace, flow)
            was = conn.execute(
                "SELECT 1 FROM pauses WHERE namespace = ? AND flow = ?", key
            ).fetchone()
            if encoded is None:
                conn.execute("DELETE FROM pauses WHERE namespace = ? AND flow = ?", key)
            else:
                conn.execute(
                    "INSERT INTO pauses (namespace, flow, note) VALUES (?, ?, ?)"
                    " ON CONFLICT (namespace, flow) DO UPDATE SET note = excluded.note",
                    (*key, encoded),
                )
            return was is not None

        return self._write("pause_flow" if encoded else "resume_flow", write)[0]

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

    def _metadata(self, name: str, meta: Any) -> dict[str, Any]:
        """An entity's metadata; an unreadable record reads as none (with a warning)."""
        try:
            decoded = json.loads(meta)
        except (TypeError, ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        log.warning("sqlite board %s: entity %s has unreadable metadata", self.path, errors.shown(name))
        return {}

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
            return [Entity(name, kind, self._metadata(name, meta), seen) for name, meta, seen in rows]

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
