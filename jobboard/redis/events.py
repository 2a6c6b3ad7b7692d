"""Wake-up of the Redis board: waiting for jobs, and what each event changes.

The event thread (:mod:`jobboard.redis.subscription`) feeds each event to
:meth:`RedisEvents._on_message`: the local view of claims and the listeners
learn of it, and the threads blocked in :meth:`RedisEvents.wait` whose flows
it concerns wake up. Waiters on named flows block on their wake-up lists
instead, so that a post wakes one idle client, not all. While the
subscription is down, the board's claims count as uncertain and waiters poll.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Collection
from typing import Any, ClassVar

from jobboard import errors
from jobboard.model import BoardEvent
from jobboard.redis.decoding import server_time, text
from jobboard.redis.idle import IdleKnowledge, flow_key
from jobboard.redis.session import log
from jobboard.redis.subscription import RedisSubscription

__all__ = ["RedisEvents"]

#: Events after which a job may be waiting.
_WAKE_KINDS = frozenset({"posted", "abandoned", "expired"})
#: Events that end a claim (its lease end no longer matters to idle waiters).
_ENDED_KINDS = frozenset({"consumed", "failed", "cancelled", "trashed", "abandoned", "expired"})
#: Tokens of a client's private wake-up list: end the wait; compute the block again.
_STOP_WAIT, _LOOK_AGAIN = "1", "0"


class RedisEvents(RedisSubscription):
    """Waiting for jobs, and what the events say."""

    #: Longest expected gap (seconds) between two heartbeats (``register_entity``) of a
    #: conductor; twice that without one, a waiter stops trusting them (see _news_horizon).
    HEARD_MAX: ClassVar[float] = 5.0
    #: Seconds after a known lease end that a waiter looks (clocks are rounded).
    EXPIRY_MARGIN: ClassVar[float] = 0.005
    #: Longest an idle waiter trusts its last check without asking (a safety net).
    QUIET_MAX: ClassVar[float] = 30.0
    #: Longest and shortest single block (seconds) on the wake-up lists. The block is
    #: read with its own timeout (block + socket timeout); on a Cluster, whose client
    #: offers no such read, it stays a second under the socket timeout.
    TOKEN_BLOCK_MAX: ClassVar[float] = 30.0
    TOKEN_BLOCK_MIN: ClassVar[float] = 0.01

    _waiters_lock: threading.Lock
    _waiters: list[tuple[frozenset[str] | None, threading.Event]]
    _idle: IdleKnowledge
    #: Set when a wait took a wake-up token: the next claim_next passes one on.
    _pass_on: bool
    #: Waiters blocked on wake-up lists: thread id -> end of the block (local monotonic).
    _blocked: dict[int, float]

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a job of ``flows`` may be waiting; False on timeout.

        Woken by posted / abandoned / expired events, and at the end of the
        earliest lease it knows of (a lease that runs out publishes nothing
        until a claim reaps it) or the due time of the first scheduled job (a
        post for later publishes ``posted``, which makes it look again). It
        asks the server only when something may have changed since the last
        check (its own or a ``claim_next`` that found nothing): an idle board
        sends nothing while nothing happens.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = flow_key(flows)
        if wanted:
            return self._wait_for_token(deadline, wanted)
        if wanted is None:
            self._follow_everything()  # posts of every flow wake it
        entry = (wanted, threading.Event())
        with self._waiters_lock:
            self._waiters.append(entry)
        try:
            while True:
                entry[1].clear()
                quiet = self._idle.until(wanted) if self._subscribed.is_set() else None
                if quiet is None:
                    if self._available(wanted):
                        return True
                    quiet = self._idle.until(wanted)
                now = time.monotonic()
                if quiet is not None:  # wake just after the first lease end
                    pause = max(quiet - now + self.EXPIRY_MARGIN, self.EXPIRY_MARGIN)
                else:
                    pause = self.LISTEN_BACKOFF_MAX  # link down: poll
                if deadline is not None:
                    pause = min(pause, deadline - now)
                    if pause <= 0:
                        return False
                entry[1].wait(pause)
        finally:
            with self._waiters_lock:
                self._waiters.remove(entry)

    def _wait_for_token(self, deadline: float | None, flows: frozenset[str]) -> bool:
        """``wait`` for named flows: block on their wake-up lists (BLPOP), so that
        a post wakes one idle client, not every one (see ``wake`` in
        ``lua/_lib.lua``). The board is asked first only when no check since the
        last reconnect proved that nothing waited; the first known lease end
        ends the block, as in ``wait``. Taking a token makes the next
        ``claim_next`` hand a wake-up on when more jobs wait."""
        keys = [f"{self._prefix}wake:{flow}" for flow in sorted(flows)]
        keys.append(self._interrupt_key)
        while True:
            if not self._subscribed.is_set():
                # Events and tokens may have been missed: poll as wait() does.
                pause = self.LISTEN_BACKOFF_MAX
                quiet = None
            else:
                quiet = self._idle.proved_until(flows, self._news_horizon())
                if quiet is None:
                    if self._available(flows):
                        return True
                    quiet = self._idle.proved_until(flows, self._news_horizon())
                pause = self._token_block_max()
            now = time.monotonic()
            if quiet is not None:
                pause = min(pause, max(quiet - now + self.EXPIRY_MARGIN, self.EXPIRY_MARGIN))
            if deadline is not None:
                pause = min(pause, deadline - now)
                if pause <= 0:
                    return False
            if pause < self.TOKEN_BLOCK_MIN:  # BLPOP's 0 would block for ever
                time.sleep(pause)
                continue
            if not self._subscribed.is_set():
                self._stopping.wait(pause)
                continue
            me = threading.get_ident()
            self._blocked[me] = now + pause
            try:
                token = self._call(
                    "wait", None, functools.partial(self._pop_token, keys, pause), safe=True
                )
            except errors.BoardUnavailable:
                if self._client is None:
                    return False  # closed meanwhile
                raise
            finally:
                self._blocked.pop(me, None)
            if token is not None:
                if text(token[0]) == self._interrupt_key:
                    if text(token[1]) == _LOOK_AGAIN:
                        continue  # news of a lease ending sooner than this block
                    return False
                self._pass_on = True
                return True

    def _news_horizon(self) -> float | None:
        """How long the latest news of the board's leases holds (None: for ever).

        A board that hears every ``claimed`` event (it follows every event) knows
        each lease as it starts. One that follows only its owners' channels learns
        of other leases from its heartbeats (``register_entity`` reads the earliest
        lease end, and wakes a waiter that would sleep past it): while they come, a
        waiter trusts them. Without heartbeats, it learns of leases from its own
        checks only: a lease started since the latest ends no sooner than one lease
        length later, so the waiter looks again then.
        """
        if self._follow_all or self._idle.fed_within(2 * max(self.lease, self.HEARD_MAX)):
            return None
        return self.lease

    def _heard_leases(self, server_now: float, lease_end: float | None) -> None:
        """A heartbeat read the earliest lease end: remember it, and wake a waiter
        whose block would end after it (so that a dead owner's job is taken over at
        its lease end) to compute its block again."""
        self._idle.heard(time.monotonic(), server_now, lease_end)
        first = self._idle.lease_end()
        late = sum(1 for end in list(self._blocked.values()) if end > first + self.EXPIRY_MARGIN)
        if late:
            self._push_interrupt(_LOOK_AGAIN, late)

    WAIT_INTERRUPTIBLE: ClassVar[bool] = True

    @property
    def _interrupt_key(self) -> str:
        """This client's private list that :meth:`interrupt_wait` pushes to."""
        return f"{self._control}:wait"

    def interrupt_wait(self) -> None:
        """End this process's waits blocked on wake-up tokens (and wake the others)."""
        self._wake(None, changed=False)
        self._push_interrupt(_STOP_WAIT)

    def _push_interrupt(self, what: str, count: int = 1) -> None:
        """Push ``count`` tokens ``what`` into this client's private wake-up list."""

        def push() -> None:
            pipe = self._pipeline()
            pipe.rpush(self._interrupt_key, *([what] * count))
            pipe.pexpire(self._interrupt_key, int(self.TOKEN_BLOCK_MAX * 1000) + 1000)
            pipe.execute()

        try:
            self._call("interrupt_wait", None, push, safe=True)
        except errors.BoardUnavailable:
            pass  # closed, or the server is away: the waits end on their own

    def _token_block_max(self) -> float:
        """Longest block on the wake-up lists."""
        if getattr(self._client, "connection_pool", None) is not None:
            return self.TOKEN_BLOCK_MAX
        limit = self._where("socket_timeout")
        if not limit:
            return self.TOKEN_BLOCK_MAX
        return max(self.TOKEN_BLOCK_MIN, min(self.TOKEN_BLOCK_MAX, float(limit) - 1.0))

    def _pop_token(self, keys: list[str], seconds: float) -> Any:
        """Block up to ``seconds`` for a wake-up token of one of ``keys``: over a
        connection of the pool, whose reply is awaited ``seconds`` plus the socket
        timeout (a block may outlast the socket timeout: an idle waiter then sends one
        request per block)."""
        client = self._redis()
        pool = getattr(client, "connection_pool", None)
        if pool is None:  # a Cluster: its client reads with the socket timeout
            return client.blpop(keys, timeout=seconds)
        connection = pool.get_connection()
        try:
            # No health-check PING first: the block itself tells whether the link works.
            connection.send_command("BLPOP", *keys, f"{seconds:.3f}", check_health=False)
            limit = seconds + float(self._where("socket_timeout") or self.SOCKET_TIMEOUT)
            return connection.read_response(timeout=limit)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _available(self, flows: frozenset[str] | None) -> bool:
        """One round trip: a waiting job of ``flows``, a lease already run out, or a
        scheduled job already due. When none, the board remembers it, with the
        first lease end or due time (see :mod:`jobboard.redis.idle`)."""
        p = self._prefix
        if flows is not None and not flows:
            return False

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

        mark = self._idle.mark()
        now, head, due, *waiting = self._call("wait", None, read, safe=True)
        answered = time.monotonic()
        if waiting and waiting[0]:
            return True
        server_now = server_time(now)
        first = min([h[0][1] for h in (head, due) if h], default=None)
        if first is not None and first <= server_now:
            return True  # a due scheduled job of another flow: the next claim promotes it
        self._idle.quiet(flows, mark, answered, server_now, first)
        return False

    def _on_message(self, data: bytes | str) -> None:
        try:
            payload = json.loads(data)
            event = BoardEvent(
                str(payload["kind"]), payload.get("job"), dict(payload.get("data") or {})
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("redis board %r: ignoring a malformed event %r", self.namespace, data)
            return
        if event.kind == "reset" and self._halted is not None:
            self._recheck_board()  # an operator reset the board: work again
        if event.kind == "halted" and self._halted is None:
            try:
                self._halt(str(event.data.get("reason") or "halted by another client"))
            except errors.BoardRegressed:
                pass  # logged and recorded by _halt
        if event.kind in _WAKE_KINDS:
            self._wake(event.data.get("flow"))
        elif event.kind == "claimed":
            try:
                ends = float(event.data["ends"])
            except (KeyError, TypeError, ValueError):
                ends = None
            self._idle.claimed(ends, event.job_id)
            self._wake(None, changed=False)  # waiters only recompute when to look again
        if event.kind in _ENDED_KINDS:
            self._idle.ended(event.job_id)
        self._emit(event)

    def _wake(self, flow: str | None, *, changed: bool = True) -> None:
        """Wake the waiters interested in ``flow`` (all of them for None);
        ``changed``: a job may be waiting now (what the last check proved is void)."""
        if changed:
            self._idle.woken(reset=flow is None)
        with self._waiters_lock:
            for flows, event in self._waiters:
                if flow is None or flows is None or flow in flows:
                    event.set()


