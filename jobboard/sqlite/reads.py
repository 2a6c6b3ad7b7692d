"""Reads and listings of the SQLite board: each one read transaction.

A row ``state='claimed' AND lease_expires_at <= now`` reads as a waiting job.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from jobboard import errors
from jobboard.model import FINISHED_STATES, Job, JobRef, JobState
from jobboard.sqlite.schema import readable_job, row_job
from jobboard.sqlite.store import log
from jobboard.sqlite.watcher import SqliteWatcher

#: Every state a row may hold, as an SQL list.
_KNOWN_STATES = ", ".join(f"'{s.value}'" for s in JobState)

__all__ = ["SqliteReads"]


class SqliteReads(SqliteWatcher):
    """Reading jobs, listings, progress, counters and statistics."""

    def get(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        return self._read("get", lambda conn, now: row_job(self._fetch(conn, job_id), now))

    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        conds: list[str] = []
        if JobState.WAITING in wanted:
            conds.append(
                "state = 'waiting' OR (state = 'claimed' AND lease_expires_at <= :now)"
                " OR (state = 'scheduled' AND not_before <= :now)"
            )
        if JobState.SCHEDULED in wanted:
            conds.append("state = 'scheduled' AND not_before > :now")
            # A state that is none of ours: an unreadable job, listed waiting for an operator.
            conds.append(f"state NOT IN ({_KNOWN_STATES})")
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
            jobs = [readable_job(row, now) for row in conn.execute(sql, params)]
            for job in jobs:
                if "unreadable" in job.details and not job.store:
                    log.warning(
                        "sqlite board %s: job %s is unreadable: %s",
                        self.path,
                        job.id,
                        job.details["unreadable"],
                    )
            return jobs

        return self._read("iterjobs", select)

    @property
    def job_count(self) -> int:
        def count(conn: sqlite3.Connection, _now: float) -> int:
            sql = (
                "SELECT COUNT(*) FROM jobs WHERE namespace = ?"
                " AND state IN ('waiting', 'scheduled', 'claimed')"
            )
            found: int = conn.execute(sql, (self.namespace,)).fetchone()[0]
            return found

        return self._read("job_count", count)


    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._job_id(job)

        def select(conn: sqlite3.Connection, _now: float) -> dict[str, dict[str, Any]]:
            self._fetch(conn, job_id)
            rows = conn.execute(
                "SELECT atom, record FROM progress WHERE namespace = ? AND job_id = ?",
                (self.namespace, job_id),
            )
            return self._progress_records(job_id, rows)

        return self._read("load_progress", select)

    def _progress_records(
        self, job_id: str, rows: Iterable[tuple[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Decoded progress records; an unreadable one is left out (its task runs
        again) with a warning, never an error that would stop a conductor."""
        records: dict[str, dict[str, Any]] = {}
        for atom, record in rows:
            try:
                decoded = json.loads(record)
            except (TypeError, ValueError, RecursionError):
                decoded = None
            if isinstance(decoded, dict):
                records[atom] = decoded
            else:
                log.warning(
                    "sqlite board %s: job %s: progress record of %s is unreadable; ignored",
                    self.path,
                    job_id,
                    errors.shown(atom),
                )
        return records

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
                " THEN 'waiting' WHEN state = 'scheduled' AND not_before <= :now"
                f" THEN 'waiting' WHEN state IN ({_KNOWN_STATES}) THEN state"
                " ELSE 'waiting' END AS s, COUNT(*), MIN(created_at)"
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
                flow = flow if isinstance(flow, str) else str(flow)
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
