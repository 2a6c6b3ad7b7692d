"""Live updates: board events and a bounded refresh, fanned out as server-sent events.

Board events reach :meth:`Hub.on_event` on a backend thread (``add_listener``).
Each is turned into a small record (kind, job, flow, owner; never a store),
kept in a ring of recent events and pushed to every subscriber at once; it
also marks the overview dirty. The refresh task then re-reads the board (at
most once per ``min_gap`` seconds, so a burst of events costs one read) and
pushes the new overview.

Some backends only report changes made through the same process (SQLite, and
any board between a lost and a re-established event link), so the refresh
task also re-reads the board every ``refresh`` seconds and pushes the overview
when it changed. Changes seen that way but never announced by an event are
reported as synthesised events (``"source": "refresh"``), so the recent
events panel is complete on every backend.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.concurrency import run_in_threadpool

from jobboard import errors
from jobboard.admin.web.snapshot import BoardReader, Snapshot
from jobboard.base import BoardEvent

__all__ = ["Hub", "Subscriber", "event_record"]

log = logging.getLogger(__name__)

#: Event data keys passed on to browsers (others may be large or private).
_EVENT_KEYS = ("flow", "name", "owner", "token", "forced", "count", "reason")
#: The state a job is in after each event kind.
_STATE_AFTER = {
    "posted": "waiting",
    "claimed": "claimed",
    "consumed": "complete",
    "failed": "failed",
    "trashed": "trashed",
    "cancelled": "cancelled",
    "abandoned": "waiting",
    "expired": "waiting",
}
#: The event kind synthesised for a state reached without an event.
_KIND_FOR = {
    "waiting": "posted",
    "claimed": "claimed",
    "complete": "consumed",
    "failed": "failed",
    "trashed": "trashed",
    "cancelled": "cancelled",
}


def event_record(event: BoardEvent, at: float, known: Snapshot | None) -> dict[str, Any]:
    """A board event as the dashboard shows it; flow and name filled in from the last read."""
    record: dict[str, Any] = {"at": at, "kind": event.kind, "job": event.job_id}
    for key in _EVENT_KEYS:
        value = event.data.get(key)
        if value is not None:
            record[key] = value[:200] if isinstance(value, str) else value
    if known is not None and event.job_id in known.jobs:
        flow, name, _ = known.jobs[event.job_id]
        record.setdefault("flow", flow)
        record.setdefault("name", name)
    return record


class Subscriber:
    """One open event stream: a bounded queue of ``(event name, data)`` messages."""

    #: Messages buffered for a slow browser before it is cut off (it reconnects).
    MAX_BACKLOG: ClassVar[int] = 256

    def __init__(self, job: str | None = None) -> None:
        self.job = job
        self.queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(self.MAX_BACKLOG)
        self.overflowed = False

    def offer(self, name: str, data: Any) -> None:
        """Queue a message; a subscriber that falls too far behind is closed."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((name, data))
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(None)  # tells the stream to end

    def close(self) -> None:
        """End the stream (it reads ``None``)."""
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.overflowed = True


class Hub:
    """Fans board events and overview updates out to event-stream subscribers."""

    #: Board events kept for the recent events panel.
    RECENT: ClassVar[int] = 200
    #: Seconds between keep-alive comments on an idle stream.
    KEEPALIVE: ClassVar[float] = 15.0

    def __init__(
        self,
        reader: BoardReader,
        *,
        refresh: float = 2.0,
        min_gap: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.refresh = refresh
        self.min_gap = min_gap
        self.clock = clock
        self.subscribers: set[Subscriber] = set()
        self.reads = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=self.RECENT)
        self._recent_lock = threading.Lock()
        # job id -> (state, when) as last reported by an event or a read
        self._last_state: dict[str, tuple[str, float]] = {}
        self._primed = False  # a first read has set the baseline
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._overview: dict[str, Any] | None = None
        self.error: str | None = None
        self.closing = False

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen to the board and start the refresh task (inside the server's loop)."""
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self.reader.board.add_listener(self.on_event)
        self._task = asyncio.create_task(self._refresh_loop(), name="dashboard-refresh")
        self._dirty.set()  # a first read at once sets the baseline of synthesised events

    def end_streams(self) -> None:
        """End every open stream soon, from any thread (a server about to stop calls it).

        Open streams would otherwise hold a graceful shutdown until its timeout.
        """
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._close_all)
            except RuntimeError:  # the loop closed in between
                pass

    def _close_all(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.close()

    async def stop(self) -> None:
        """Stop listening, end every stream and the refresh task."""
        self.reader.board.remove_listener(self.on_event)
        for subscriber in list(self.subscribers):
            subscriber.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- events -------------------------------------------------------------

    def on_event(self, event: BoardEvent) -> None:
        """A board listener: record the event and push it (called on a backend thread)."""
        record = event_record(event, self.clock(), self.reader.last)
        self._remember(record)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._publish, record)
            except RuntimeError:  # the loop closed in between: the server is stopping
                pass

    def _remember(self, record: dict[str, Any]) -> None:
        with self._recent_lock:
            self._recent.appendleft(record)
            state = _STATE_AFTER.get(record["kind"])
            if state is not None and record["job"]:
                self._last_state[record["job"]] = (state, record["at"])

    def _publish(self, record: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.job is None or subscriber.job == record["job"]:
                subscriber.offer("board", record)
        if self._dirty is not None:
            self._dirty.set()

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest events, newest first."""
        with self._recent_lock:
            return list(self._recent)[:limit]

    def subscribe(self, job: str | None = None) -> Subscriber:
        """A new stream; ``job`` restricts board events to one job (overviews still come)."""
        subscriber = Subscriber(job)
        if self.closing:
            subscriber.close()
            return subscriber
        self.subscribers.add(subscriber)
        if self._overview is not None:
            subscriber.offer("overview", self._overview)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream that ended."""
        self.subscribers.discard(subscriber)

    # -- the overview -------------------------------------------------------

    async def overview(self, *, max_age: float | None = None) -> dict[str, Any]:
        """The dashboard's overview document with the recent events (reads the board if due)."""
        snapshot = await run_in_threadpool(self._read, max_age)
        return {**snapshot.doc, "events": self.recent(), "error": None}

    def _read(self, max_age: float | None) -> Snapshot:
        before = self.reader.last
        started = self.clock()
        snapshot = self.reader.read(max_age=max_age)
        if snapshot is not before:
            self.reads += 1
            self._synthesise(snapshot, started)
        return snapshot

    def _synthesise(self, snapshot: Snapshot, started: float) -> None:
        """Record, as events, state changes a read saw that no board event announced.

        An event that arrived after the read began wins over what the read saw.
        """
        now = self.clock()
        with self._recent_lock:
            seen: dict[str, tuple[str, float]] = {}
            for job_id, (flow, name, state) in snapshot.jobs.items():
                known = self._last_state.get(job_id)
                if known is not None and known[1] >= started:
                    seen[job_id] = known
                    continue
                seen[job_id] = (state, now)
                if not self._primed or (known is not None and known[0] == state):
                    continue
                record = {"at": now, "kind": _KIND_FOR[state], "job": job_id, "flow": flow,
                          "name": name, "source": "refresh"}  # fmt: skip
                self._recent.appendleft(record)
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._publish_quietly, record)
            for job_id, known in self._last_state.items():
                if job_id not in seen and known[1] >= started:
                    seen[job_id] = known  # posted after the read began
            self._last_state = seen
            self._primed = True

    def _publish_quietly(self, record: dict[str, Any]) -> None:
        """Push a synthesised event without marking the overview dirty (it is fresh)."""
        for subscriber in list(self.subscribers):
            if subscriber.job is None or subscriber.job == record["job"]:
                subscriber.offer("board", record)

    async def _refresh_loop(self) -> None:
        """Push a fresh overview after events (coalesced) and every ``refresh`` seconds."""
        assert self._dirty is not None
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.refresh)
                await asyncio.sleep(self.min_gap)  # gather a burst of events into one read
            except TimeoutError:
                pass
            self._dirty.clear()
            await self._push_overview()  # reads even when nobody watches: events stay complete

    async def _push_overview(self) -> None:
        try:
            doc = await self.overview(max_age=0.0)
            self.error = None
        except Exception as err:  # noqa: BLE001 - the loop must outlive any bad read
            if isinstance(err, errors.BoardError | OSError):
                message = f"board unreachable, retrying: {err}"
            else:
                log.error("dashboard: reading the board failed: %s", type(err).__name__)
                message = f"reading the board failed ({type(err).__name__}), retrying"
            if message != self.error:
                log.warning("dashboard: %s", message)
            self.error = message
            for subscriber in list(self.subscribers):
                subscriber.offer("problem", {"error": message, "at": self.clock()})
            return
        self._overview = doc
        for subscriber in list(self.subscribers):
            subscriber.offer("overview", doc)
