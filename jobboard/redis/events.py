"""Events and wake-up of the Redis board: one subscriber thread per board.

Every script publishes its change as a JSON event (channels in
``lua/_lib.lua``): a change of a job someone holds goes to that owner's
channel, other changes to the namespace's channel, the board's own notices
(halted, reset) to a third one. A background thread per board subscribes
(reconnecting with backoff) to the notices and to the channels of the owners
this process claims for, so that an idle conductor hears nothing of other
conductors' jobs; a board with a listener of every event (``watch``,
``wait_for``) or a waiter on any flow takes them all with one pattern. Each
event feeds the local view of claims and the listeners, and wakes the threads
blocked in :meth:`RedisEvents.wait` whose flows it concerns. While the
subscription is down, the board's claims count as uncertain and waiters poll
instead.
"""

from __future__ import annotations

import functools
import json
import random
import re
import threading
import time
from collections.abc import Collection
from typing import Any, ClassVar

import redis

from jobboard import errors
from jobboard.model import BoardEvent
from jobboard.redis import topology
from jobboard.redis.decoding import server_time, text
from jobboard.redis.durability import RedisDurability
from jobboard.redis.idle import IdleKnowledge, flow_key
from jobboard.redis.session import log

__all__ = ["RedisEvents"]

#: Events after which a job may be waiting.
_WAKE_KINDS = frozenset({"posted", "abandoned", "expired"})
#: Events that end a claim (its lease end no longer matters to idle waiters).
_ENDED_KINDS = frozenset({"consumed", "failed", "cancelled", "trashed", "abandoned", "expired"})
#: Tokens of a client's private wake-up list: end the wait; compute the block again.
_STOP_WAIT, _LOOK_AGAIN = "1", "0"
#: Control messages to the event thread: stop; follow the channels now wanted.
_STOP, _FOLLOW = "stop", "follow"


class RedisEvents(RedisDurability):
    """The event subscription, and waiting for jobs."""

    #: Seconds the event thread blocks per read (an idle board's thread wakes this
    #: often, and checks its link with a PING every HEALTH_CHECK_INTERVAL). close()
    #: wakes it with a message, or by shutting its socket when the server is away.
    LISTEN_POLL: ClassVar[float] = 10.0
    #: First and longest pause (seconds) between event-subscription reconnects.
    LISTEN_BACKOFF: ClassVar[float] = 0.1
    LISTEN_BACKOFF_MAX: ClassVar[float] = 5.0
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

    _channel: str
    _control: str
    _listener: threading.Thread | None
    _stopping: threading.Event
    _waiters_lock: threading.Lock
    _waiters: list[tuple[frozenset[str] | None, threading.Event]]
    _idle: IdleKnowledge
    #: Set when a wait took a wake-up token: the next claim_next passes one on.
    _pass_on: bool
    #: Owners whose channels the event thread follows; and every event (a pattern)?
    _owners: set[str]
    _follow_all: bool
    #: Changes of what to follow asked / taken into account by the event thread.
    _follow_asked: int
    _follow_done: int
    _follow_cond: threading.Condition
    #: The event thread's current subscription (close() may shut its socket).
    _pubsub: Any
    #: Waiters blocked on wake-up lists: thread id -> end of the block (local monotonic).
    _blocked: dict[int, float]

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
            client.publish(self._control, _STOP)  # wakes the event thread at once
        except redis.RedisError:
            connection = getattr(self._pubsub, "connection", None)
            if connection is not None:  # the server is away: end the thread's read
                try:
                    connection.disconnect()
                except (redis.RedisError, OSError):
                    pass
        if self._listener not in (None, threading.current_thread()):
            assert self._listener is not None
            self._listener.join(self.LISTEN_POLL + self.SOCKET_TIMEOUT)
        self._listener = None

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

    # -- events -------------------------------------------------------------

    # -- what to follow ------------------------------------------------------

    def _follow_owner(self, owner: str) -> None:
        """Follow ``owner``'s event channel before its first claim, so that a cancel
        or the loss of its claims reaches this process (one round trip, once)."""
        if owner in self._owners and self._follow_done >= self._follow_asked:
            return
        with self._follow_cond:
            self._owners.add(owner)
        self._ask_follow()

    def _follow_everything(self) -> None:
        """Follow every event of the board (a listener of all events, a waiter on any
        flow): from now on, for the life of the board."""
        if self._follow_all and self._follow_done >= self._follow_asked:
            return
        with self._follow_cond:
            self._follow_all = True
        self._ask_follow()

    def _ask_follow(self) -> None:
        """Have the event thread subscribe to what is now wanted, and wait (bounded)
        until the server confirmed it. While the link is down there is nothing to
        wait for: the next subscription takes every wanted channel, and the claims
        made meanwhile are re-read then."""
        with self._follow_cond:
            self._follow_asked += 1
            wanted = self._follow_asked
        if self._listener is None or not self._subscribed.is_set():
            return
        try:
            self._call(
                "follow", None, lambda: self._redis().publish(self._control, _FOLLOW), safe=True
            )
        except errors.BoardUnavailable:
            return
        with self._follow_cond:
            if not self._follow_cond.wait_for(
                lambda: self._follow_done >= wanted or self._stopping.is_set(),
                self.SOCKET_TIMEOUT,
            ):
                log.warning("redis board %r: event subscription not confirmed", self.namespace)

    def _wanted_channels(self) -> set[str]:
        """The channels the event thread subscribes to (the pattern aside)."""
        with self._follow_cond:
            owners = sorted(self._owners)
        return {self._control, f"{self._channel}:board", *(f"{self._channel}:o:{o}" for o in owners)}

    @property
    def _pattern(self) -> str:
        """The pattern of every event channel of the namespace."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self._channel) + "*"

    # -- events -------------------------------------------------------------

    def _listen(self, client: redis.Redis) -> None:
        """The event thread: subscribe, feed events to ``_emit``, reconnect with backoff."""
        delay = self.LISTEN_BACKOFF
        first = True  # connect() has just checked the board
        while not self._stopping.is_set():
            pubsub = self._pubsub = topology.subscriber(client, refresh=delay > self.LISTEN_BACKOFF)
            link = _Link(pubsub, self._follow_asked)
            try:
                link.follow(self._wanted_channels(), self._follow_all and self._pattern)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self.LISTEN_POLL)
                    if message is None:
                        continue
                    kind, channel = message["type"], text(message["channel"])
                    if kind in ("subscribe", "psubscribe"):
                        if not link.confirmed(channel, kind):
                            continue
                        if link.initial:
                            # Events may have been missed while away: catch up first, so
                            # claim_status() says UNCERTAIN until the view is current.
                            link.initial = False
                            if not first:
                                self._recheck_board()
                            first = False
                            self._recheck_claims(client)
                            self._subscribed.set()
                            self._wake(None)
                            delay = self.LISTEN_BACKOFF
                        with self._follow_cond:
                            self._follow_done = max(self._follow_done, link.asked)
                            self._follow_cond.notify_all()
                    elif channel == self._control:
                        if text(message["data"]) == _FOLLOW:
                            link.asked = self._follow_asked
                            link.follow(self._wanted_channels(), self._follow_all and self._pattern)
                            if not link.pending:
                                with self._follow_cond:
                                    self._follow_done = max(self._follow_done, link.asked)
                                    self._follow_cond.notify_all()
                    elif kind == "pmessage" or (kind == "message" and not link.everything):
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
        with self._follow_cond:
            self._follow_cond.notify_all()

    def _recheck_board(self) -> None:
        """After a reconnect (the server may have restarted): check the board's
        data set at once, so that a loss turns the health check red even when
        this process is idle."""
        try:
            self._hello()
        except errors.BoardRegressed:
            pass  # logged and recorded by _halt; events still flow

    def _recheck_claims(self, client: redis.Redis) -> None:
        """Re-read every claim this process holds, in one pipelined round trip,
        and mark lost those that are no longer ours (ended, taken or expired
        while the subscription was down, when their events were missed)."""
        with self._local_lock:
            held = list(self._held.values())
        if not held:
            return
        pipe = topology.pipeline(client, f"{self._prefix}seq")
        pipe.time()
        for claim in held:
            pipe.hmget(self._job_key(claim.job_id), "state", "token", "owner", "lease_expires_at")
        now_reply, *rows = pipe.execute()
        now = server_time(now_reply)
        for claim, (state, token, owner, ends) in zip(held, rows, strict=True):
            try:
                ours = (
                    text(state) == "claimed"
                    and int(token) == claim.token
                    and text(owner) == claim.owner
                    and float(ends) > now
                )
            except (TypeError, ValueError):
                ours = False
            if not ours:
                log.warning(
                    "redis board %r: claim of job %s (token %d) was lost while the event "
                    "link was down",
                    self.namespace,
                    claim.job_id,
                    claim.token,
                )
                with self._local_lock:
                    current = self._held.get(claim.job_id)
                    if current is not None and current.token == claim.token:
                        self._lose(claim.job_id)

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


class _Link:
    """What one subscription of the event thread has asked and the server confirmed."""

    def __init__(self, pubsub: Any, asked: int) -> None:
        self.pubsub = pubsub
        self.asked = asked  # the follow requests this subscription covers
        self.channels: set[str] = set()
        self.pattern: str | None = None
        #: Subscriptions sent and not confirmed yet.
        self.pending: set[str] = set()
        #: The first confirmations are still awaited (the link is not up yet).
        self.initial = True
        #: The pattern is confirmed: every event comes as a pmessage (a message on an
        #: owner's channel then comes twice, and is read once, from the pattern).
        self.everything = False

    def follow(self, channels: set[str], pattern: str | bool | None) -> None:
        """Subscribe to the channels (and the pattern) not subscribed yet."""
        new = channels - self.channels
        if new:
            self.pubsub.subscribe(*sorted(new))
            self.channels |= new
            self.pending |= new
        if isinstance(pattern, str) and self.pattern is None:
            self.pubsub.psubscribe(pattern)
            self.pattern = pattern
            self.pending.add(pattern)

    def confirmed(self, channel: str, kind: str) -> bool:
        """A confirmation arrived; True once nothing sent is unconfirmed."""
        self.pending.discard(channel)
        if kind == "psubscribe":
            self.everything = True
        return not self.pending
