"""Wake-ups between the processes of one host: inotify on the database's directory.

SQLite tells no one of a commit. On Linux the kernel does: every commit
writes the database's ``-wal`` file (or the file itself outside WAL mode),
and inotify reports the write to any process watching the directory. One
inotify instance and one reader thread per process (started on first use)
watch the directories of the boards that have a waiting thread, and call each
such board's callback when its files were written, a batch of events at a time.

This is only a wake-up: the board still learns what changed from ``PRAGMA
data_version``, and keeps a slow poll for what inotify cannot see (a file on
a network filesystem, a full event queue). Where inotify is missing (not
Linux, no ``libc``, the per-user limit of instances reached) :func:`subscribe`
returns ``None`` (or :func:`arm` False) and the board polls as before. Only the standard library:
``ctypes`` for the three system calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Subscription", "arm", "disarm", "subscribe"]

log = logging.getLogger("jobboard.sqlite")

# From <sys/inotify.h>.
_IN_MODIFY = 0x002
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_WATCHED = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
#: Bytes read at a time: many events, one callback per board per batch.
_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class Subscription:
    """One board's interest in writes to its files (names inside one directory)."""

    directory: bytes
    names: frozenset[bytes]
    callback: Callable[[], None]
    wd: int = -1


class _Inotify:
    """The process's inotify instance, its watches and its reader thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.failed = False
        self.thread: threading.Thread | None = None
        self.by_wd: dict[int, list[Subscription]] = {}
        self.libc: ctypes.CDLL | None = None

    def _start(self) -> bool:
        """Open the instance and start the reader (under the lock); False if unavailable."""
        if self.fd is not None:
            return True
        if self.failed or not sys.platform.startswith("linux"):
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            init1 = libc.inotify_init1
        except (OSError, AttributeError):
            self.failed = True
            return False
        fd = init1(os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            log.info("inotify unavailable (%s): SQLite boards poll", os.strerror(err))
            if err not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                self.failed = True  # a limit may lift later; anything else will not
            return False
        self.libc, self.fd = libc, fd
        self.thread = threading.Thread(target=self._read, args=(fd,), name="sqlite-inotify")
        self.thread.daemon = True
        self.thread.start()
        return True

    def available(self) -> bool:
        with self.lock:
            return self._start()

    def arm(self, sub: Subscription) -> bool:
        """Start delivering writes to ``sub``; False if its directory cannot be watched."""
        with self.lock:
            if sub.wd >= 0:
                return True
            if not self._start():
                return False
            assert self.libc is not None
            wd = self.libc.inotify_add_watch(self.fd, sub.directory, _WATCHED)
            if wd < 0:
                log.info(
                    "inotify cannot watch %r (%s): this SQLite board polls",
                    sub.directory,
                    os.strerror(ctypes.get_errno()),
                )
                return False
            sub.wd = wd
            self.by_wd.setdefault(wd, []).append(sub)
            return True

    def disarm(self, sub: Subscription) -> None:
        """Stop delivering writes to ``sub``; the last one of a directory drops its watch."""
        with self.lock:
            subs = self.by_wd.get(sub.wd)
            wd, sub.wd = sub.wd, -1
            if subs is None or sub not in subs:
                return
            subs.remove(sub)
            if not subs:
                del self.by_wd[wd]
                if self.libc is not None and self.fd is not None:
                    self.libc.inotify_rm_watch(self.fd, wd)

    def _read(self, fd: int) -> None:
        """The reader thread: call the callbacks of every board whose files were written."""
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except InterruptedError:
                continue
            except OSError:
                return  # the instance was closed (after a fork)
            woken: dict[int, Subscription] = {}
            with self.lock:
                for wd, mask, name in _events(data):
                    if mask & _IN_Q_OVERFLOW:  # events were dropped: wake everyone
                        for subs in self.by_wd.values():
                            woken.update((id(s), s) for s in subs)
                        continue
                    if mask & _IN_IGNORED:
                        self.by_wd.pop(wd, None)
                        continue
                    for sub in self.by_wd.get(wd, ()):
                        if name in sub.names:
                            woken[id(sub)] = sub
            for sub in woken.values():
                try:
                    sub.callback()
                except Exception:  # a board's callback must never stop the reader
                    log.exception("sqlite wake-up callback failed")

    def after_fork(self) -> None:
        """In a forked child: the parent's instance and thread are not ours."""
        self.lock = threading.Lock()
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.thread, self.by_wd = None, None, {}


def _events(data: bytes) -> list[tuple[int, int, bytes]]:
    """(wd, mask, name) of each event in a read buffer."""
    out = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        start = offset + _EVENT.size
        out.append((wd, mask, data[start : start + length].rstrip(b"\0")))
        offset = start + length
    return out


_INOTIFY = _Inotify()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_INOTIFY.after_fork)


def subscribe(path: str, callback: Callable[[], None]) -> Subscription | None:
    """A subscription calling ``callback()`` (from a shared thread; keep it short),
    while armed (:func:`arm`), whenever the SQLite database ``path`` or its journal
    is written by any process of this host.

    Returns ``None`` when inotify is not available: the caller polls instead.
    """
    if not _INOTIFY.available():
        return None
    real = os.path.realpath(path)
    directory, base = os.path.split(os.fsencode(real))
    names = frozenset({base, base + b"-wal", base + b"-journal"})
    return Subscription(directory or b".", names, callback)


def arm(sub: Subscription) -> bool:
    """Deliver writes to ``sub`` from now on; False when its directory cannot be watched.

    A board arms only while a thread waits for jobs: a busy process is not woken
    by every write of the others (its poll still brings claim news).
    """
    return _INOTIFY.arm(sub)


def disarm(sub: Subscription | None) -> None:
    """Stop delivering writes to ``sub`` (idempotent)."""
    if sub is not None:
        _INOTIFY.disarm(sub)
