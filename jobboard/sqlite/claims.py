"""Claims of the SQLite board: claiming one job, the best waiting job, renewing.

A claim is one write transaction: the best waiting job is found with one
index probe per flow, a job whose attempts are used up is trashed as poison
instead, and the token grows by one with every claim.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import replace

from jobboard import errors
from jobboard.model import BoardEvent, Claim, JobRef, JobState
from jobboard.sqlite.schema import SQL_BEST_ANY, SQL_BEST_OF_FLOW, row_job
from jobboard.sqlite.store import log
from jobboard.sqlite.writes import SqliteWrites

__all__ = ["SqliteClaims"]


class SqliteClaims(SqliteWrites):
    """Claiming and renewing."""

    def _claim_row(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        who: str,
        lease: float,
        now: float,
        started: float,
        events: list[BoardEvent],
    ) -> Claim | str:
        """Claim a waiting row (inside the write), or trash it and return why: a
        poison job (attempts used up), or a record that cannot be read."""
        try:
            row_job(row, now)
        except errors.CorruptJob as err:
            reason = errors.capped(f"unreadable record: {err}", 500)
            self._trash_row(conn, row, reason, "unreadable", now, events)
            log.warning("sqlite board %s: trashed job %s: %s", self.path, row["id"], reason)
            return reason
        if row["attempts"] >= row["max_attempts"]:
            reason = self._poison_reason(row["attempts"], row["max_attempts"])
            self._trash_row(conn, row, reason, "poison", now, events)
            return reason
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

    def _trash_row(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        reason: str,
        why: str,
        now: float,
        events: list[BoardEvent],
    ) -> None:
        """Trash a job that must never run (inside the write), counted as ``why`` too."""
        self._update(
            conn,
            row["seq"],
            state=JobState.TRASHED.value,
            updated_at=now,
            finished_at=now,
            last_error=reason,
        )
        self._count(conn, "trashed")
        self._count(conn, why)
        events.append(BoardEvent("trashed", row["id"], {"reason": reason, "forced": True}))

    def _start_claim(self, claim: Claim, events: list[BoardEvent]) -> Claim:
        """Publish a claim's events in an order that leaves the new claim owned locally."""
        self._leave_queue()  # a leased claim: a frozen owner must not hold the others' wake-ups
        self._publish(e for e in events if e.kind != "claimed")
        with self._track_lock:
            self._track(claim)
        self._publish(e for e in events if e.kind == "claimed")
        self._kick_watcher()
        return claim

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._job_id(job)
        length = self._claim_args(job_id, who, lease)
        started = self._local_clock()

        def take(
            conn: sqlite3.Connection, now: float, events: list[BoardEvent]
        ) -> Claim | errors.UnclaimableJob:
            row = self._fetch(conn, job_id)
            if row["state"] != JobState.WAITING.value:
                owner = f" by {errors.shown(row['owner'])}" if row["owner"] else ""
                state = errors.capped(str(row["state"]))
                raise errors.UnclaimableJob(
                    f"job {errors.shown(job_id)} is {state}{owner}; it cannot be claimed"
                )
            claim = self._claim_row(conn, row, who, length, now, started, events)
            if isinstance(claim, str):  # trashed: commit that, then refuse
                return errors.UnclaimableJob(f"job {errors.shown(job_id)} was trashed: {claim}")
            return claim

        outcome, events = self._write("claim", take)
        if isinstance(outcome, errors.UnclaimableJob):
            self._publish(events)
            raise outcome
        return self._start_claim(outcome, events)

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        length = self._claim_args("?", who, lease)
        wanted = None if flows is None else sorted(set(flows))
        started = self._local_clock()

        def take(conn: sqlite3.Connection, now: float, events: list[BoardEvent]) -> Claim | None:
            while True:
                seq = self._best_waiting(conn, wanted)
                if seq is None:
                    return None
                row = conn.execute("SELECT * FROM jobs WHERE seq = ?", (seq,)).fetchone()
                claim = self._claim_row(conn, row, who, length, now, started, events)
                if not isinstance(claim, str):
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
