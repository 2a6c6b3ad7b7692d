"""Wake-up and pushed claim news of the SQLite board: a ``data_version`` watcher.

SQLite pushes nothing, so a per-board watcher thread reads ``PRAGMA
data_version`` (a few microseconds; it changes when any other connection
commits). While a thread waits in :meth:`SqliteWatcher.wait`, inotify
(:mod:`jobboard.sqlite.wakeup`) wakes the waiters and the watcher when any
process of the host writes the database; otherwise the watcher polls with a
sleep growing from :attr:`SqliteWatcher.POLL_MIN` to
:attr:`SqliteWatcher.POLL_MAX` while nothing changes. It runs only while a
thread waits or the board holds claims not known lost. On a change it wakes
waiters and re-reads the rows of held claims, so that a cancel request or a
claim taken away by another process reaches ``claim_status`` and
``cancel_requested`` as local calls.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from jobboard import errors
from jobboard.model import BoardEvent, Claim, JobState
from jobboard.sqlite import wakeup
from jobboard.sqlite.queue import WaitQueue, queue_key
from jobboard.sqlite.schema import (
    SQL_BEST_ANY,
    SQL_BEST_OF_FLOW,
    SQL_EXPIRED,
    SQL_NEXT_EXPIRY,
    stored_state,
)
from jobboard.sqlite.store import SqliteStore, log

__all__ = ["SqliteWatcher"]

_EVENT_OF_STATE = {
    JobState.COMPLETE: "consumed",
    JobState.FAILED: "failed",
    JobState.TRASHED: "trashed",
    JobState.CANCELLED: "cancelled",
}


class SqliteWatcher(SqliteStore):
    """Waiting for jobs, and the watcher thread that tells of others' commits."""

    #: Shortest sleep of the change poll (right after a change), in seconds.
    POLL_MIN: ClassVar[float] = 0.005
    #: Longest sleep of the change poll (after a quiet spell); bounds push latency.
    POLL_MAX: ClassVar[float] = 0.15
    #: Sleep of the poll while inotify wakes the watcher (it only covers what inotify misses).
    PUSHED_POLL: ClassVar[float] = 1.0
    #: With inotify: shortest time between two reads of ``data_version`` (bounds the
    #: reads in a burst of writes), and the re-read after a wake-up that found no commit
    #: yet (a commit's first write wakes the watcher before the commit is visible).
    PUSHED_GAP: ClassVar[float] = 0.002
    #: Longest sleep of a waiter next in line behind the head of its queue of idle boards
    #: (:mod:`jobboard.sqlite.queue`) before it looks at the board itself: bounds how long
    #: a frozen head delays a job.
    QUEUED_POLL: ClassVar[float] = 1.0
    #: The same for a waiter further back (it matters only if the next in line froze too).
    QUEUED_SLOW_POLL: ClassVar[float] = 10.0
    #: Factor by which the poll's sleep grows after each quiet poll.
    POLL_GROWTH: ClassVar[float] = 1.5
    #: Most held claims re-read by one watcher query (SQLite's parameter limit is far above).
    CHECK_CHUNK: ClassVar[int] = 400

    _changed: threading.Condition
    _generation: int
    _waiters: int
    _track_lock: threading.RLock
    _watcher: threading.Thread | None
    _kick: threading.Event
    _ending: set[str]
    polls: int
    _push: wakeup.Subscription | None = None
    #: This board's place in the queues of idle boards (None: every waiter arms inotify).
    _queue: WaitQueue | None = None
    #: Set when the board became head of its queue: the watcher arms, then waiters look.
    _new_head: bool = False
    #: ``wait`` ends (False) when :meth:`interrupt_wait` is called: an idle conductor
    #: need not wake every second to look at its stop flag.
    WAIT_INTERRUPTIBLE: ClassVar[bool] = True
    #: An interrupt not yet seen by a ``wait`` (one that starts later still sees it).
    _interrupted: bool = False
    #: Number of looks at the board by waiting threads (tests bound it: one board wakes per post).
    wait_looks: int = 0
    #: Whether inotify has woken this board's watcher while a thread waited (else it polls).
    pushed: bool = False

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
                    if self._interrupted:
                        self._interrupted = False
                        return False
                stage = self._stage()
                self.wait_looks += 1
                ready, next_expiry = self._read(
                    "wait", lambda conn, now: self._waiting_state(conn, now, wanted)
                )
                if ready:
                    return True
                pause = None if deadline is None else deadline - time.monotonic()
                if pause is not None and pause <= 0:
                    return False
                if stage is None and self._join_queue(wanted):
                    stage = self._stage()  # a new place: the head is told when it gets there
                if stage is not None:  # behind another idle board: look now and then
                    poll = self.QUEUED_POLL if stage == "deputy" else self.QUEUED_SLOW_POLL
                    pause = poll if pause is None else min(pause, poll)
                elif next_expiry is not None:  # an expiring lease makes a job waiting, silently
                    until_expiry = max(0.0, next_expiry - time.time()) + self.POLL_MIN
                    pause = until_expiry if pause is None else min(pause, until_expiry)
                with self._changed:
                    self._changed.wait_for(functools.partial(self._changed_since, seen), pause)
                    if self._state == "closed":
                        return False
        finally:
            with self._changed:
                self._waiters -= 1
                if self._waiters == 0:  # a busy process need not hear of every write
                    wakeup.disarm(self._push)

    def _stage(self) -> str | None:
        """None if this board heads its queue of idle boards (or has none), else
        "deputy" (next in line) or "line": it waits behind another (no inotify)."""
        queue = self._queue
        return None if queue is None else queue.stage()

    def _join_queue(self, flows: list[str] | None) -> bool:
        """Take (or keep) this board's place in the queue of idle boards for ``flows``.

        False when there are no queues (a private database, or lock files that
        cannot be made): then this board wakes on every write, as a head does.
        """
        if self.in_memory:
            return False
        with self._pool_lock:
            if self._state != "open":
                return False
            if self._queue is None:
                self._queue = WaitQueue(self.path, self._on_head, self._bump)
            queue = self._queue
        return queue.join(queue_key(self.namespace, flows))

    def _on_head(self) -> None:
        """This board reached the head of its queue: arm inotify, then look at the board."""
        self._new_head = True
        self._kick_watcher()

    def _leave_queue(self) -> None:
        """Give up this board's place in its queue (the next board in line wakes at once)."""
        queue = self._queue
        if queue is not None:
            queue.leave()

    def stop_waiting(self) -> None:
        self._leave_queue()

    def interrupt_wait(self) -> None:
        """End this board's blocked waits (False) soon; a wait starting later ends too."""
        with self._changed:
            self._interrupted = True
            self._changed.notify_all()

    def _changed_since(self, seen: int) -> bool:
        """Whether a change was seen after generation ``seen``, an interrupt, or the end."""
        return self._generation != seen or self._interrupted or self._state == "closed"

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
        return self._push_wanted() or self._holds_live_claims()

    def _push_wanted(self) -> bool:
        """Whether a thread waits for jobs and this board is not queued behind another."""
        return self._waiters > 0 and self._stage() is None

    def _on_written(self) -> None:
        """inotify saw a write to the board's files (any process): wake the waiters,
        which look at the board themselves, and the watcher, which reads
        ``data_version`` (and again shortly, for a commit not yet visible)."""
        if self._waiters > 0:
            self._kick.set()
            self._bump()

    def _watch(self) -> None:
        """The watcher thread: read ``data_version`` when woken by a write, else poll.

        While a thread waits for jobs and inotify works (:mod:`jobboard.sqlite.wakeup`),
        a write by any process of the host wakes the watcher; it reads
        ``data_version`` then (at most once a ``PUSHED_GAP``), again
        ``PUSHED_GAP`` later (a commit is visible only after its last write), and
        otherwise every ``PUSHED_POLL``. Otherwise (only claims to watch, or no
        inotify) it polls adaptively from ``POLL_MIN`` to ``POLL_MAX``.
        """
        sub = self._push = wakeup.subscribe(self.path, self._on_written)
        conn: sqlite3.Connection | None = None
        last: int | None = None
        interval = self.POLL_MIN
        woken = False
        read_at = 0.0
        try:
            while self._state == "open":
                try:
                    if not self._watch_wanted():
                        wakeup.disarm(sub)
                        self._kick.wait()  # idle: no waiter, no claim; sleep until kicked
                        self._kick.clear()
                        last, interval = None, self.POLL_MIN
                        continue
                    armed = sub is not None and sub.wd >= 0
                    if sub is not None and armed != self._push_wanted():
                        if armed:
                            wakeup.disarm(sub)
                            armed = False
                        elif wakeup.arm(sub):
                            armed = self.pushed = True
                        else:
                            sub = self._push = None  # the directory cannot be watched: poll
                    if conn is None:
                        conn = self._open_connection()
                    if woken and armed:  # a burst of writes: one read a PUSHED_GAP
                        time.sleep(max(0.0, read_at + self.PUSHED_GAP - time.monotonic()))
                    self._kick.clear()  # before reading: a write from now on wakes the next wait
                    read_at = time.monotonic()
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    self.polls += 1
                    new_head, self._new_head = self._new_head, False
                    if version != last or new_head:
                        # Resumed (last is None) or changed: waiters look again (a change
                        # may have come before this read), held claims are re-read.
                        self._bump()
                        if last is not None and version != last:
                            interval = self.POLL_MIN
                        if self._holds_live_claims():
                            self._check_held(conn)
                        last = version
                    elif not armed:
                        interval = min(interval * self.POLL_GROWTH, self.POLL_MAX)
                    else:  # read again soon after a wake-up, else only now and then
                        interval = self.PUSHED_GAP if woken else self.PUSHED_POLL
                except Exception:  # the watcher must survive a bad moment of the file
                    log.warning("sqlite board %s: change poll failed", self.path, exc_info=True)
                    interval = self.POLL_MAX
                woken = self._kick.wait(interval)
        finally:
            self._push = None
            wakeup.disarm(sub)
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



def _verdict(claim: Claim, row: sqlite3.Row | None, now: float) -> BoardEvent | None:
    """The event telling that ``claim`` is gone, judged from the job's current row, or None.

    A row older than the claim (a smaller token: read before the claim was
    made) proves nothing and yields None.
    """
    job_id = claim.job_id
    if row is None:
        return BoardEvent("trashed", job_id, {"token": claim.token, "forced": True, "gone": True})
    token = row["token"]
    try:
        state = stored_state(row)
    except errors.CorruptJob:  # a record broken under us: the claim is gone
        return BoardEvent("trashed", job_id, {"token": claim.token, "forced": True})
    if not isinstance(token, int) or token < claim.token:
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
