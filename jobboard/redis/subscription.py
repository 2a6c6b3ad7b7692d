"""The event subscription of the Redis board: one subscriber thread per board.

Every script publishes its change as a JSON event (channels in
``lua/_lib.lua``): a change of a job someone holds goes to that owner's
channel, other changes to the namespace's channel, the board's own notices
(halted, reset) to a third one. The thread subscribes (reconnecting with
backoff) to the notices and to the channels of the owners this process claims
for, so that an idle conductor hears nothing of other conductors' jobs; a
board with a listener of every event (``watch``, ``wait_for``) or a waiter on
any flow subscribes to the namespace's channel too, and keeps the board marked
observed so that owners' events are published there as well (a plain
subscription, which an ACL user limited to ``&jb:*`` may make). After each (re)subscription it
re-reads the claims it holds, since events may have been missed meanwhile.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, ClassVar

import redis

from jobboard import errors
from jobboard.redis import topology
from jobboard.redis.decoding import server_time, text
from jobboard.redis.durability import RedisDurability
from jobboard.redis.session import log

__all__ = ["RedisSubscription"]

#: Control messages to the event thread: stop; follow the channels now wanted.
_STOP, _FOLLOW = "stop", "follow"


class RedisSubscription(RedisDurability):
    """The event thread: what it follows, its link, and catching up after a reconnect."""

    #: Seconds the event thread blocks per read, and between the PINGs that check its
    #: link, while the board holds no claim (HEALTH_CHECK_INTERVAL while it does: a lost
    #: link then makes its claims uncertain). close() wakes it with a message, or by
    #: shutting its socket when the server is away.
    LISTEN_POLL: ClassVar[float] = 30.0
    #: First and longest pause (seconds) between event-subscription reconnects.
    LISTEN_BACKOFF: ClassVar[float] = 0.1
    LISTEN_BACKOFF_MAX: ClassVar[float] = 5.0
    #: Seconds a board that follows every event marks the board observed for; it
    #: marks it again every third of that.
    OBSERVE_TTL: ClassVar[float] = 60.0

    _channel: str
    _control: str
    _listener: threading.Thread | None
    _stopping: threading.Event
    #: Owners whose channels the event thread follows; and every event (a pattern)?
    _owners: set[str]
    _follow_all: bool
    #: Changes of what to follow asked / taken into account by the event thread.
    _follow_asked: int
    _follow_done: int
    _follow_cond: threading.Condition
    #: The event thread's current subscription (close() may shut its socket).
    _pubsub: Any
    #: When this board last marked the board observed (local monotonic).
    _observed_at: float

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
        self._observe()  # before the subscription: owners' events reach it from then on
        with self._follow_cond:
            self._follow_all = True
        self._ask_follow()

    def _observe(self) -> None:
        """Keep the board's ``observed_until`` ahead (``lua/observe.lua``): while it is,
        the scripts publish owners' events on the namespace's channel too."""
        self._observed_at = time.monotonic()
        try:
            self._call(
                "observe",
                None,
                lambda: self._scripts["observe"](
                    keys=[f"{self._prefix}board"], args=[self._prefix, self.OBSERVE_TTL]
                ),
                safe=True,
            )
        except errors.BoardUnavailable as err:
            log.info("redis board %r: could not mark the board observed: %s", self.namespace, err)

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
        if threading.current_thread() is self._listener:
            return  # asked from a listener: the event thread follows once it returns
        with self._follow_cond:
            if not self._follow_cond.wait_for(
                lambda: self._follow_done >= wanted or self._stopping.is_set(),
                self.SOCKET_TIMEOUT,
            ):
                log.warning("redis board %r: event subscription not confirmed", self.namespace)

    def _wanted_channels(self) -> set[str]:
        """The channels the event thread subscribes to."""
        with self._follow_cond:
            owners = sorted(self._owners)
            everything = self._follow_all
        wanted = {self._control, f"{self._channel}:board"}
        wanted.update(f"{self._channel}:o:{o}" for o in owners)
        if everything:
            wanted.add(self._channel)
        return wanted

    # -- events -------------------------------------------------------------

    def _listen(self, client: redis.Redis) -> None:
        """The event thread: subscribe, feed events to ``_emit``, reconnect with backoff."""
        delay = self.LISTEN_BACKOFF
        first = True  # connect() has just checked the board
        while not self._stopping.is_set():
            pubsub = self._pubsub = topology.subscriber(client, refresh=delay > self.LISTEN_BACKOFF)
            link = _Link(pubsub, self._follow_asked, self._channel)
            try:
                if self._follow_all:
                    self._observe()
                link.follow(self._wanted_channels())
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self._link_check(pubsub))
                    if self._follow_all and self._observed_at + self.OBSERVE_TTL / 3 <= time.monotonic():
                        self._observe()
                    if message is None:
                        continue
                    kind, channel = message["type"], text(message["channel"])
                    if kind == "subscribe":
                        if not link.confirmed(channel):
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
                            link.follow(self._wanted_channels())
                            if not link.pending:
                                with self._follow_cond:
                                    self._follow_done = max(self._follow_done, link.asked)
                                    self._follow_cond.notify_all()
                    elif kind == "message" and (channel == self._channel or not (
                        link.everything and channel.startswith(link.owners)
                    )):
                        # Following everything, an owner's event comes on the namespace's
                        # channel too: it is read there, once.
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

    def _link_check(self, pubsub: Any) -> float:
        """Seconds between checks of the event link: HEALTH_CHECK_INTERVAL while this
        process holds claims, LISTEN_POLL while it holds none (an idle conductor then
        sends next to nothing but its heartbeat)."""
        seconds = float(
            self.HEALTH_CHECK_INTERVAL if self._holds_live_claims() else self.LISTEN_POLL
        )
        if self._follow_all:
            seconds = min(seconds, self.OBSERVE_TTL / 3)
        connection: Any = getattr(pubsub, "connection", None)
        if connection is not None and connection.health_check_interval:
            connection.health_check_interval = seconds
        return seconds

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
        """Apply one event (see :mod:`jobboard.redis.events`)."""
        raise NotImplementedError

    def _wake(self, flow: str | None, *, changed: bool = True) -> None:
        """Wake waiters (see :mod:`jobboard.redis.events`)."""
        raise NotImplementedError


class _Link:
    """What one subscription of the event thread has asked and the server confirmed."""

    def __init__(self, pubsub: Any, asked: int, channel: str) -> None:
        self.pubsub = pubsub
        self.asked = asked  # the follow requests this subscription covers
        self.channel = channel  # the namespace's channel
        self.owners = f"{channel}:o:"  # the start of every owner's channel
        self.channels: set[str] = set()
        #: Subscriptions sent and not confirmed yet.
        self.pending: set[str] = set()
        #: The first confirmations are still awaited (the link is not up yet).
        self.initial = True
        #: The namespace's channel is confirmed (the board follows every event): an
        #: owner's event then comes twice, and is read once, from that channel.
        self.everything = False

    def follow(self, channels: set[str]) -> None:
        """Subscribe to the channels not subscribed yet."""
        new = channels - self.channels
        if new:
            self.pubsub.subscribe(*sorted(new))
            self.channels |= new
            self.pending |= new

    def confirmed(self, channel: str) -> bool:
        """A confirmation arrived; True once nothing sent is unconfirmed."""
        self.pending.discard(channel)
        if channel == self.channel:
            self.everything = True
        return not self.pending
