"""``jobboard watch``: a live view of a board's counts, claims and recent events."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TextIO

from jobboard.admin import fleet, lookup, render
from jobboard.admin.console import EXIT_OK, LONG_CLAIM, screen_width, terminal_size
from jobboard.admin.listings import add_running, claim_records, paused_flows
from jobboard.admin.running import running_view
from jobboard.base import JobBoard
from jobboard.model import BoardEvent, JobState
from jobboard.urls import redact_url

__all__ = ["Watch", "cmd_watch", "redact"]


redact = redact_url


class Watch:
    """The live view of ``jobboard watch``.

    It redraws after board events (delivered by ``add_listener``), never more
    often than once per ``MIN_GAP`` seconds, and at least every ``interval``
    seconds. Waiting and claimed counts and the claims come from the unfinished
    jobs at each redraw; finished counts come from a full ``stats()`` read
    once per ``interval``, advanced by events in between, so a busy board is
    not scanned on every event. Ctrl-C and SIGTERM only set a flag, which the
    loop reads every ``STOP_CHECK`` seconds.

    The board is read on a helper thread: a read that fails, or that has not
    answered within ``READ_TIMEOUT`` seconds (a backend may retry for a long
    time while its server is down), leaves the last frame on screen under a
    "board unreachable, retrying" banner; the view retries every
    ``RETRY_EVERY`` seconds and never quits because of an outage.
    """

    #: Shortest time between two redraws (at most four per second).
    MIN_GAP: ClassVar[float] = 0.25
    #: Longest the loop waits without looking for a stop request (seconds; no server call).
    STOP_CHECK: ClassVar[float] = 0.1
    #: Board events kept for the "recent events" panel.
    RECENT_EVENTS: ClassVar[int] = 8
    #: Longest a frame waits for the board before it shows the outage banner (seconds).
    READ_TIMEOUT: ClassVar[float] = 3.0
    #: How often an unreachable board is tried again (seconds).
    RETRY_EVERY: ClassVar[float] = 1.0
    #: Conductors listed in the conductors panel.
    MAX_CONDUCTORS: ClassVar[int] = 5
    #: Finished state that each finishing event adds a job to.
    FINISHING: ClassVar[dict[str, str]] = {
        "consumed": "complete",
        "failed": "failed",
        "trashed": "trashed",
        "cancelled": "cancelled",
    }

    def __init__(
        self,
        board: JobBoard,
        out: TextIO,
        *,
        label: str = "",
        interval: float = 5.0,
        long_after: float = LONG_CLAIM,
        width: Callable[[], int] = screen_width,
        clear: bool = False,
    ) -> None:
        self.board = board
        self.out = out
        self.label = label
        self.interval = max(interval, self.MIN_GAP)
        self.long_after = long_after
        self.width = width
        self.clear = clear
        self.frames = 0
        self._stop = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._events: deque[tuple[float, str, str | None, dict[str, Any]]] = deque(
            maxlen=self.RECENT_EVENTS
        )
        self._finished = {state: 0 for state in self.FINISHING.values()}
        self._full_due = True
        self._reader: threading.Thread | None = None
        self._result: tuple[dict[str, Any] | None, BaseException | None] | None = None
        self._last: dict[str, Any] | None = None
        self._down_since: float | None = None
        #: Frames drawn under the outage banner.
        self.outage_frames = 0

    def stop(self) -> None:
        """End ``run`` within ``STOP_CHECK`` seconds.

        It only sets a flag: a signal handler may call it even while the main
        thread holds an event's lock (setting the event from there could deadlock).
        """
        self._stop = True

    def _pause(self, seconds: float, *, until_event: bool) -> None:
        """Wait ``seconds`` (or until a board event), checking for a stop request meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if until_event and self._wake.wait(min(remaining, self.STOP_CHECK)):
                return
            if not until_event:
                time.sleep(min(remaining, self.STOP_CHECK))

    def _on_event(self, event: BoardEvent) -> None:
        with self._lock:
            self._events.appendleft((time.time(), event.kind, event.job_id, dict(event.data)))
            state = self.FINISHING.get(event.kind)
            if state is not None:
                self._finished[state] += 1
            elif event.kind == "purged":
                self._full_due = True
        self._wake.set()

    def snapshot(self, full: bool) -> dict[str, Any]:
        """Read the board once for a frame; ``full`` recounts finished jobs too."""
        if full:
            with self._lock:
                self._full_due = False
                self._finished = dict.fromkeys(self._finished, 0)
            states = self.board.stats()["states"]
            with self._lock:
                for state in self._finished:
                    self._finished[state] += states.get(state, 0)
        active = list(self.board.iterjobs())
        entities = self.board.iter_entities()
        paused = paused_flows(self.board)
        now = time.time()
        claims = claim_records(active, entities, now, self.long_after)
        lines = terminal_size().lines
        max_claims = max(3, lines - 16 - self.RECENT_EVENTS)
        claimed = {c["job"] for c in claims[:max_claims]}
        add_running(claims, running_view(self.board, [j for j in active if j.id in claimed], now))
        conductors = fleet.conductor_rows(entities, now)
        with self._lock:
            counts = {
                "waiting": sum(1 for j in active if j.state is JobState.WAITING),
                "claimed": len(claims),
                **self._finished,
            }
            events = list(self._events)
        ids = lookup.short_ids([*(j.id for j in active), *(e[2] for e in events if e[2])])
        events = [(when, kind, ids.get(job_id or "", job_id), data) for when, kind, job_id, data in events]
        return {
            "board": self.label,
            "now": now,
            "counts": counts,
            "paused": paused,
            "conductors": conductors,
            "max_conductors": self.MAX_CONDUCTORS,
            "claims": claims,
            "max_claims": max_claims,
            "events": events,
        }

    def _read(self, full: bool) -> tuple[dict[str, Any] | None, str | None]:
        """A frame read on the helper thread: (snapshot, None), or (None, why it failed).

        At most one read is in flight: a read still hanging from an earlier
        frame is waited for again rather than started twice.
        """
        if self._reader is None or not self._reader.is_alive():
            if self._result is None or self._reader is None:
                self._result = None

                def work() -> None:
                    try:
                        self._result = (self.snapshot(full), None)
                    except Exception as err:  # noqa: BLE001 - shown in the banner, retried
                        self._result = (None, err)

                self._reader = threading.Thread(target=work, name="watch-read", daemon=True)
                self._reader.start()
        deadline = time.monotonic() + self.READ_TIMEOUT
        while self._reader.is_alive() and not self._stop and time.monotonic() < deadline:
            self._reader.join(self.STOP_CHECK)
        result, self._result = self._result, None
        if result is None:
            if not self._reader.is_alive():  # finished in the instant after the wait
                return self._read(full)
            return None, f"no answer within {render.fmt_duration(self.READ_TIMEOUT)}"
        self._reader = None
        snapshot, err = result
        if err is None:
            return snapshot, None
        return None, " ".join(f"{type(err).__name__}: {err}".split())[:200]

    def _outage_frame(self, why: str) -> dict[str, Any]:
        """The last frame read (or an empty one) under the "board unreachable" banner."""
        now = time.time()
        if self._down_since is None:
            self._down_since = now
        frame = dict(self._last or {
            "board": self.label, "counts": {}, "claims": [], "events": [], "conductors": None,
        })  # fmt: skip
        since = render.fmt_duration(now - self._down_since)
        frame["banner"] = f"board unreachable, retrying (for {since}): {why}"
        frame["now"] = now
        return frame

    def _draw(self, frame: str) -> None:
        prefix = "\x1b[H\x1b[2J" if self.clear else ("\n" if self.frames else "")
        self.out.write(prefix + render.printable(frame) + "\n")
        self.out.flush()

    def run(self, iterations: int = 0) -> int:
        """Redraw until stopped (or after ``iterations`` frames); returns ``EXIT_OK``."""
        self.board.add_listener(self._on_event)
        try:
            next_full = 0.0
            while not self._stop:
                self._wake.clear()
                now = time.monotonic()
                full = self._full_due or now >= next_full
                if full:
                    next_full = now + self.interval
                snapshot, why = self._read(full)
                if self._stop:
                    break
                if snapshot is None:
                    self._full_due = True  # finished counts are unknown until a full read
                    self._draw(render.render_watch(self._outage_frame(why or ""), self.width()))
                    self.outage_frames += 1
                else:
                    self._last, self._down_since = snapshot, None
                    self._draw(render.render_watch(snapshot, self.width()))
                drawn = time.monotonic()
                self.frames += 1
                if iterations and self.frames >= iterations:
                    break
                if snapshot is None:
                    self._pause(self.RETRY_EVERY, until_event=False)
                    continue
                self._pause(next_full - drawn, until_event=True)
                # Events in a burst are drawn together: never more than one frame per MIN_GAP.
                self._pause(drawn + self.MIN_GAP - time.monotonic(), until_event=False)
        finally:
            self.board.remove_listener(self._on_event)
        return EXIT_OK


def cmd_watch(board: JobBoard, args: argparse.Namespace) -> int:
    """``watch``: redraw the live view until Ctrl-C or SIGTERM (both end it with 0)."""
    watch = Watch(
        board,
        sys.stdout,
        label=redact(args.board_url),
        interval=args.interval,
        long_after=args.long_after,
        clear=sys.stdout.isatty(),
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: watch.stop())
    try:
        return watch.run(args.iterations)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
