"""Queues of idle SQLite boards on one host, so that a write wakes one of them.

Without them every idle board of the host arms inotify on the database and
wakes on every commit of any process (a thundering herd: a job makes several
commits, and every idle conductor reads and queries after each). Instead, a
board whose ``wait`` finds no work takes its place in the queue of its
namespace and flows: an exclusive ``flock`` on two lock files beside the
database (``<db>-waiters-<key>-line``, then ``<db>-waiters-<key>``), asked for
by a small thread of the board that blocks in the kernel until it gets them.
Only the board holding the second lock (the *head*) arms inotify and wakes on
writes; the others sleep in ``flock`` and, as a fallback for a head that is
frozen, look at the board with one cheap query now and then: the next in line
(the *deputy*, holding the line lock) every
:attr:`~jobboard.sqlite.watcher.SqliteWatcher.QUEUED_POLL`, the others every
:attr:`~jobboard.sqlite.watcher.SqliteWatcher.QUEUED_SLOW_POLL`.

The turn passes on (the kernel gives the lock to a waiting board at once):

* when the head claims a job (every SQLite claim has a lease, and a silent
  owner at the head must not keep the others from reaping its lapsed lease);
  it takes a place again when it next waits;
* on ``stop_waiting`` and ``close``;
* when the head's process dies (the kernel drops its locks).

A place given up while still queued keeps its thread blocked in ``flock``
(it cannot be interrupted): taken again, it is the same place; otherwise the
thread lets the lock go as soon as it gets it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import weakref
from collections.abc import Callable, Collection

from jobboard.sqlite.store import log

__all__ = ["WaitQueue", "queue_key"]


def queue_key(namespace: str, flows: Collection[str] | None) -> str:
    """The queue of the boards of ``namespace`` waiting for ``flows`` (all when None)."""
    text = namespace + "\0" + ("*" if flows is None else "\n".join(sorted(set(flows))))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class _Place:
    """One place in one queue: two lock files and the thread that waits for them.

    ``<key>-line`` holds the board next in line (the *deputy*), ``<key>`` the head:
    a board takes the line lock, then the head lock, then lets the line lock go.
    Only the deputy waits on the head lock, so a hand-over wakes one thread.
    """

    def __init__(self, path: str, on_head: Callable[[], None], on_deputy: Callable[[], None]) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self.line_fd = os.open(path + "-line", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            os.close(self.fd)
            raise
        self.cond = threading.Condition()
        self.wanted = True
        #: "line" (behind the deputy), "deputy" (next in line), "head", or None.
        self.stage: str | None = None
        self.closed = False
        self._on_head = on_head
        self._on_deputy = on_deputy
        self.thread = threading.Thread(target=self._run, name="sqlite-board-queue", daemon=True)
        self.thread.start()

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # the board's callback must not lose the place
            log.exception("sqlite board queue: callback failed")

    def _take(self, fd: int, stage: str) -> bool:
        """Block for the lock ``fd``; True if still wanted (then ``stage``), else let it go."""
        fcntl.flock(fd, fcntl.LOCK_EX)
        with self.cond:
            if self.wanted and not self.closed:
                self.stage = stage
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.stage = None
            return False

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.wanted and not self.closed:
                        self.cond.wait()
                    if self.closed:
                        return
                    self.stage = "line"
                if not self._take(self.line_fd, "deputy"):
                    continue
                self._call(self._on_deputy)  # its waiters look more often from now on
                head = self._take(self.fd, "head")
                fcntl.flock(self.line_fd, fcntl.LOCK_UN)  # the next board becomes deputy
                if not head:
                    continue
                self._call(self._on_head)
                with self.cond:
                    while self.stage == "head" and not self.closed:
                        self.cond.wait()
        except OSError:
            log.warning("sqlite board queue failed: this board wakes on every write", exc_info=True)
            with self.cond:
                self.closed, self.stage = True, None
        finally:
            os.close(self.fd)
            os.close(self.line_fd)

    def join(self) -> None:
        with self.cond:
            self.wanted = True
            self.cond.notify_all()

    def leave(self, close: bool = False) -> None:
        """Give the place up (its locks at once if held); ``close`` ends the thread too."""
        with self.cond:
            self.wanted = False
            self.closed = self.closed or close
            try:
                if self.stage == "head":
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                elif self.stage == "deputy":  # still blocked on the head lock: let it go when got
                    fcntl.flock(self.line_fd, fcntl.LOCK_UN)
            except OSError:  # closed under us (a forked child): nothing is held
                pass
            self.stage = None
            self.cond.notify_all()

    def after_fork(self) -> None:
        """In a forked child: the locks are the parent's, the thread is gone."""
        self.cond = threading.Condition()
        self.closed, self.wanted, self.stage = True, False, None
        for fd in (self.fd, self.line_fd):
            try:
                os.close(fd)  # the parent's lock stays: it holds the file open too
            except OSError:
                pass


class WaitQueue:
    """A board's place in the queues of idle boards of its database file."""

    def __init__(
        self, db_path: str, on_head: Callable[[], None], on_deputy: Callable[[], None]
    ) -> None:
        self._base = os.path.realpath(db_path) + "-waiters-"
        self._on_head = on_head
        self._on_deputy = on_deputy
        self._lock = threading.Lock()
        self._places: dict[str, _Place] = {}
        self._current: str | None = None
        self.failed = False
        _QUEUES.add(self)

    def join(self, key: str) -> bool:
        """Take a place in queue ``key`` (leaving any other); False if queues cannot work."""
        with self._lock:
            if self.failed:
                return False
            if self._current is not None and self._current != key:
                self._places[self._current].leave()
            self._current = key
            place = self._places.get(key)
            if place is not None:
                if place.closed:  # its thread failed: wake on every write from now on
                    self.failed, self._current = True, None
                    return False
                place.join()
                return True
            try:
                self._places[key] = _Place(self._base + key, self._on_head, self._on_deputy)
            except OSError as err:
                log.info("sqlite board queue unavailable (%s): idle boards all wake", err)
                self.failed = True
                self._current = None
                return False
            return True

    def stage(self) -> str | None:
        """None when this board heads its queue (or has no place, or queues failed);
        "deputy" when it is next in line, else "line"."""
        with self._lock:
            if self._current is None:
                return None
            place = self._places[self._current]
            if place.closed or place.stage == "head":
                return None
            return "line" if place.stage in ("line", None) else "deputy"

    def leave(self) -> None:
        """Give up the current place (the lock at once): the next board in line wakes."""
        with self._lock:
            key, self._current = self._current, None
            if key is not None:
                self._places[key].leave()

    def close(self) -> None:
        with self._lock:
            places, self._places, self._current = self._places, {}, None
            self.failed = True
        for place in places.values():
            place.leave(close=True)

    def after_fork(self) -> None:
        """In a forked child: give up every place without touching the parent's locks."""
        self._lock = threading.Lock()
        places, self._places, self._current = self._places, {}, None
        self.failed = True
        for place in places.values():
            place.after_fork()


_QUEUES: weakref.WeakSet[WaitQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_QUEUES):
        queue.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
