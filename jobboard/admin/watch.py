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

from jobboard.admin import render
from jobboard.admin.console import EXIT_OK, LONG_CLAIM, screen_width, terminal_size
from jobboard.admin.listings import claim_records
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
    """

    #: Shortest time between two redraws (at most four per second).
    MIN_GAP: ClassVar[float] = 0.25
    #: Longest the loop waits without looking for a stop request (seconds; no server call).
    STOP_CHECK: ClassVar[float] = 0.1
    #: Board events kept for the "recent events" panel.
    RECENT_EVENTS: ClassVar[int] = 8
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
        now = time.time()
        claims = claim_records(active, entities, now, self.long_after)
        with self._lock:
            counts = {
                "waiting": sum(1 for j in active if j.state is JobState.WAITING),
                "claimed": len(claims),
                **self._finished,
            }
            events = list(self._events)
        lines = terminal_size().lines
        return {
            "board": self.label,
            "now": now,
            "counts": counts,
            "claims": claims,
            "max_claims": max(3, lines - 10 - self.RECENT_EVENTS),
            "events": events,
        }

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
                self._draw(render.render_watch(self.snapshot(full), self.width()))
                drawn = time.monotonic()
                self.frames += 1
                if iterations and self.frames >= iterations:
                    break
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
