"""Fenced writes of the SQLite board: progress, finishing, abandoning, cancelling.

Each is one ``BEGIN IMMEDIATE`` transaction that reads the job's row, checks
the fence with the contract's rule and writes, so no other process can come
between the check and the write.
"""

from __future__ import annotations

import sqlite3

from jobboard import errors
from jobboard.changes import Ending, Release
from jobboard.model import BoardEvent, Job, JobRef, JobState
from jobboard.sqlite.reads import SqliteReads
from jobboard.sqlite.schema import readable_job, stored_state

__all__ = ["SqliteWrites"]


class SqliteWrites(SqliteReads):
    """The writes a claim fences, and cancel."""

    def cancel(self, job: JobRef) -> Job:
        job_id = self._job_id(job)

        def flag(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fetch(conn, job_id)
            state = stored_state(row)
            if state.finished:
                raise errors.InvalidState(
                    f"job {errors.shown(job_id)} is already {state.value}; nothing to cancel"
                )
            if state in (JobState.WAITING, JobState.SCHEDULED):
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
            return readable_job(row, now)

        updated, events = self._write("cancel", flag)
        self._publish(events)
        return updated


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


    def _finish(self, end: Ending) -> Job:
        job_id = end.job_id

        def finish(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fenced(conn, job_id, end.who, end.token, end.force)
            done = self._update(
                conn,
                row["seq"],
                state=end.state.value,
                owner=None,
                lease_expires_at=None,
                updated_at=now,
                finished_at=now,
                result=end.result_json,
                last_error=end.last_error(row["last_error"]),
            )
            self._count(conn, end.event)
            events.append(end.published(row["token"], row["flow"]))
            return readable_job(done, now)

        with self._ending_job(job_id):
            done, events = self._write(end.event, finish)
            self._untrack(job_id)
        self._publish(events)
        return done

    def _release_claim(self, release: Release) -> Job:
        job_id = release.job_id

        def give_back(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Job:
            row = self._fenced(conn, job_id, release.who, release.token, release.force)
            if row["state"] != JobState.CLAIMED.value:
                raise errors.InvalidState(f"job {errors.shown(job_id)} is not claimed; nothing to abandon")
            released = self._update(
                conn,
                row["seq"],
                state=JobState.WAITING.value,
                owner=None,
                claimed_at=None,
                lease_expires_at=None,
                updated_at=now,
                last_error=release.reason if release.reason is not None else row["last_error"],
                attempts=release.attempts(row["attempts"]),
            )
            self._count(conn, "abandoned")
            events.append(release.published(row["token"], row["flow"]))
            return readable_job(released, now)

        with self._ending_job(job_id):
            released, events = self._write("abandon", give_back)
            self._untrack(job_id)
        self._publish(events)
        return released
