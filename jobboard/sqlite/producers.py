"""What the SQLite board adds for producers: scheduled jobs, keys, children, results, records.

* Scheduled jobs are rows in state ``scheduled`` with their due time in
  ``not_before``. Every write transaction first promotes due ones to
  ``waiting`` (at most :attr:`SqliteProducers.PROMOTE_BATCH`, found by the
  partial index ``jobs_due``), just as it first reaps lapsed leases, so a
  claim sees them in priority order; reads report a due row as waiting.
  ``wait`` also wakes at the next due time.
* A dedupe key is the ``dedupe_key`` column (unique per namespace); the post
  looks it up inside its ``BEGIN IMMEDIATE`` transaction, so racing
  producers, even in other processes, get one job. Deleting the row (purge,
  retention) frees the key.
* Children are found through the ``jobs_parent`` index.
* ``wait_for`` is woken by the change watcher: this board's own writes, and
  other processes' commits seen by the watcher's ``data_version`` poll.
* The record store is the ``schedules`` table, compare-and-set in one write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from jobboard.model import BoardEvent, Job, JobState
from jobboard.sqlite.claims import SqliteClaims
from jobboard.sqlite.schema import row_job

__all__ = ["SqliteProducers"]

_NEXT_DUE = "SELECT MIN(not_before) FROM jobs WHERE namespace = ? AND state = 'scheduled'"


class SqliteProducers(SqliteClaims):
    """Promotion of scheduled jobs, dedupe keys, children, ``wait_for`` wake-ups, records."""

    #: Most due scheduled jobs one write transaction promotes to waiting.
    PROMOTE_BATCH: ClassVar[int] = 500

    _job_watchers: list[Callable[[], None]]

    # -- scheduled jobs ---------------------------------------------------------

    def _reap(self, conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> None:
        """Reap lapsed leases, then promote due scheduled jobs (inside every write)."""
        super()._reap(conn, now, events)
        conn.execute(
            "UPDATE jobs SET state = 'waiting', updated_at = ? WHERE seq IN ("
            " SELECT seq FROM jobs WHERE namespace = ? AND state = 'scheduled'"
            " AND not_before <= ? ORDER BY not_before LIMIT ?)",
            (now, self.namespace, now, self.PROMOTE_BATCH),
        )

    def _waiting_state(
        self, conn: sqlite3.Connection, now: float, flows: list[str] | None
    ) -> tuple[bool, float | None]:
        """As the watcher's, counting due scheduled jobs as waiting and waking at the
        next due time (of any flow: an early wake only looks again)."""
        ready, wake_at = super()._waiting_state(conn, now, flows)
        if ready:
            return True, None
        sql = (
            "SELECT 1 FROM jobs WHERE namespace = ? AND state = 'scheduled' AND not_before <= ?"
        )
        params: tuple[Any, ...] = (self.namespace, now)
        if flows is not None:
            sql += f" AND flow IN ({', '.join('?' * len(flows))})"
            params += tuple(flows)
        if conn.execute(sql + " LIMIT 1", params).fetchone() is not None:
            return True, None
        due = conn.execute(_NEXT_DUE, (self.namespace,)).fetchone()[0]
        if due is not None and (wake_at is None or due < wake_at):
            wake_at = due
        return False, wake_at

    # -- keys and children ---------------------------------------------------------

    def _keyed(self, conn: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        """The row holding a dedupe key (index ``jobs_key``), if any."""
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM jobs WHERE namespace = ? AND dedupe_key = ?", (self.namespace, key)
        ).fetchone()
        return row

    def _children(
        self, parent_id: str, wanted: frozenset[JobState], flow: str | None
    ) -> list[Job]:
        def select(conn: sqlite3.Connection, now: float) -> list[Job]:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE namespace = ? AND parent = ? ORDER BY priority, seq",
                (self.namespace, parent_id),
            )
            jobs = (row_job(row, now) for row in rows)
            return [j for j in jobs if j.state in wanted and (flow is None or j.flow == flow)]

        return self._read("children", select)

    # -- waking wait_for -------------------------------------------------------------

    def _bump(self) -> None:
        """Wake waiters, and every ``wait_for`` (something changed)."""
        super()._bump()
        for wake in list(self._job_watchers):
            wake()

    def _watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Follow the change watcher (it runs while anyone waits) until stopped."""
        with self._changed:
            self._job_watchers.append(wake)
            self._waiters += 1
        self._kick_watcher()
        stopped = threading.Event()

        def stop() -> None:
            if stopped.is_set():
                return
            stopped.set()
            with self._changed:
                self._job_watchers.remove(wake)
                self._waiters -= 1

        return stop

    # -- the record store --------------------------------------------------------------

    def _put_schedule(self, name: str, encoded: str, expect_version: int | None) -> int:
        def put(conn: sqlite3.Connection, _now: float, _events: list[BoardEvent]) -> int:
            found = conn.execute(
                "SELECT version FROM schedules WHERE namespace = ? AND name = ?",
                (self.namespace, name),
            ).fetchone()
            current = None if found is None else int(found[0])
            if current != expect_version:
                raise self._conflict(name, expect_version, current)
            version = (current or 0) + 1
            conn.execute(
                "INSERT INTO schedules (namespace, name, record, version) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, name) DO UPDATE SET record = excluded.record,"
                " version = excluded.version",
                (self.namespace, name, encoded, version),
            )
            return version

        version, _ = self._write("put_schedule", put)
        return version

    def _get_schedules(self) -> dict[str, tuple[str, int]]:
        def select(conn: sqlite3.Connection, _now: float) -> dict[str, tuple[str, int]]:
            rows = conn.execute(
                "SELECT name, record, version FROM schedules WHERE namespace = ?",
                (self.namespace,),
            )
            return {name: (record, int(version)) for name, record, version in rows}

        return self._read("get_schedules", select)

    def _remove_schedule(self, name: str, expect_version: int | None) -> bool:
        def delete(conn: sqlite3.Connection, _now: float, _events: list[BoardEvent]) -> bool:
            found = conn.execute(
                "SELECT version FROM schedules WHERE namespace = ? AND name = ?",
                (self.namespace, name),
            ).fetchone()
            current = None if found is None else int(found[0])
            if expect_version is not None and current != expect_version:
                raise self._conflict(name, expect_version, current)
            conn.execute(
                "DELETE FROM schedules WHERE namespace = ? AND name = ?", (self.namespace, name)
            )
            return current is not None

        removed, _ = self._write("remove_schedule", delete)
        return removed
