"""Events and wake-up of the Redis board: one subscriber thread per board.

Every script publishes its change as a JSON event on the namespace's channel.
A background thread per board subscribes to it (reconnecting with backoff)
and feeds each event to the local view of claims and to listeners, and wakes
the threads blocked in :meth:`RedisEvents.wait` whose flows it concerns.
While the subscription is down, the board's claims count as uncertain and
waiters poll instead.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Collection
from typing import Any, ClassVar

import redis

from jobboard.model import BoardEvent
from jobboard.redis.decoding import server_time, text
from jobboard.redis.session import RedisSession, log

__all__ = ["RedisEvents"]

#: Events after which a job may be waiting.
_WAKE_KINDS = frozenset({"posted", "abandoned", "expired"})


class RedisEvents(RedisSession):
    """The event subscription, and waiting for jobs."""

    #: Seconds the event thread blocks per read; bounds how long close() waits
    #: for it when the server cannot be told to wake it.
    LISTEN_POLL: ClassVar[float] = 1.0
    #: First and longest pause (seconds) between event-subscription reconnects.
    LISTEN_BACKOFF: ClassVar[float] = 0.1
    LISTEN_BACKOFF_MAX: ClassVar[float] = 5.0

    _channel: str
    _control: str
    _listener: threading.Thread | None
    _stopping: threading.Event
    _waiters_lock: threading.Lock
    _waiters: list[tuple[frozenset[str] | None, threading.Event]]

    def _start_listening(self, client: redis.Redis) -> None:
        """Start the event thread on ``client``."""
        self._stopping.clear()
        self._listener = threading.Thread(
            target=self._listen,
            args=(client,),
            name=f"jobboard-events-{self.namespace}",
            daemon=True,
        )
        self._listener.start()

    def _stop_listening(self, client: redis.Redis) -> None:
        """Stop the event thread and wait for it (bounded)."""
        self._stopping.set()
        try:
            client.publish(self._control, "stop")  # wakes the event thread at once
        except redis.RedisError:
            pass
        if self._listener not in (None, threading.current_thread()):
            assert self._listener is not None
            self._listener.join(self.LISTEN_POLL + self.SOCKET_TIMEOUT)
        self._listener = None

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a job of ``flows`` may be waiting; False on timeout.

        Woken by posted / abandoned / expired events. Between events it checks
        once per lease length, because a lease that simply runs out publishes
        nothing until some claim reaps it, and at the next due time of a
        scheduled job (a post for later publishes ``posted``, which wakes it to
        learn the new due time).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = None if flows is None else frozenset([flows] if isinstance(flows, str) else flows)
        entry = (wanted, threading.Event())
        with self._waiters_lock:
            self._waiters.append(entry)
        try:
            while True:
                entry[1].clear()
                ready, due_in = self._available(wanted)
                if ready:
                    return True
                pause = self.lease if due_in is None else min(self.lease, due_in)
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return False
                if not self._subscribed.is_set():
                    pause = min(pause, self.LISTEN_BACKOFF_MAX)
                if not entry[1].wait(pause) and deadline is not None:
                    if time.monotonic() >= deadline:
                        return False
        finally:
            with self._waiters_lock:
                self._waiters.remove(entry)

    def _available(self, flows: frozenset[str] | None) -> tuple[bool, float | None]:
        """One round trip: (a waiting job of ``flows``, a lease already run out or a
        scheduled job already due; seconds until the next scheduled job is due)."""
        p = self._prefix
        if flows is not None and not flows:
            return False, None

        def read() -> list[Any]:
            pipe = self._pipeline()
            pipe.time()
            pipe.zrange(f"{p}leases", 0, 0, withscores=True)
            pipe.zrange(f"{p}scheduled", 0, 0, withscores=True)
            if flows is None:
                pipe.scard(f"{p}flows")
            else:
                pipe.exists(*(f"{p}waiting:{f}" for f in flows))
            return pipe.execute()

        now_reply, head, due, *waiting = self._call("wait", None, read, safe=True)
        now = server_time(now_reply)
        due_in = None if not due else max(0.0, due[0][1] - now)
        if (waiting and waiting[0]) or due_in == 0.0:
            return True, None  # a due job of another flow: the next claim promotes it
        return bool(head) and head[0][1] <= now, due_in

    # -- events -------------------------------------------------------------

    def _listen(self, client: redis.Redis) -> None:
        """The event thread: subscribe, feed events to ``_emit``, reconnect with backoff."""
        delay = self.LISTEN_BACKOFF
        while not self._stopping.is_set():
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self._channel, self._control)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self.LISTEN_POLL)
                    if message is None or text(message["channel"]) != self._channel:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        self._wake(None)  # events may have been missed while away
                        delay = self.LISTEN_BACKOFF
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                if self._stopping.is_set():
                    break
                self._subscribed.clear()
                self._wake(None)
                log.warning(
                    "redis board %r: event link lost (%s); reconnecting in %.2fs",
                    self.namespace,
                    err,
                    delay,
                )
                self._stopping.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.LISTEN_BACKOFF_MAX)
            except Exception:  # never let the event thread die silently
                log.exception("redis board %r: event thread error", self.namespace)
                self._subscribed.clear()
                self._stopping.wait(delay)
                delay = min(delay * 2, self.LISTEN_BACKOFF_MAX)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
        self._subscribed.clear()

    def _on_message(self, data: bytes | str) -> None:
        try:
            payload = json.loads(data)
            event = BoardEvent(
                str(payload["kind"]), payload.get("job"), dict(payload.get("data") or {})
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("redis board %r: ignoring a malformed event %r", self.namespace, data)
            return
        if event.kind in _WAKE_KINDS:
            self._wake(event.data.get("flow"))
        self._emit(event)

    def _wake(self, flow: str | None) -> None:
        """Wake the waiters interested in ``flow`` (all of them for None)."""
        with self._waiters_lock:
            for flows, event in self._waiters:
                if flow is None or flows is None or flow in flows:
                    event.set()
