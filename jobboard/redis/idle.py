"""What an idle Redis board knows without asking: nothing waits, and when the
first lease runs out.

A check of the server (``wait``'s or a ``claim_next`` that found nothing)
proves that no job of some flows was waiting at that moment and tells when the
earliest lease ends. Until an event says otherwise (a post, an abandon, an
expiry, a reconnect of the event link) or that lease end comes, asking again
would only repeat the answer: ``wait()`` blocks instead, and wakes at the lease
end so that a dead owner's job is taken over at once. A ``claimed`` event
carries its lease end, so a lease taken meanwhile is known too; a board that
does not hear other owners' events learns of their leases from its heartbeats
(:meth:`IdleKnowledge.heard`) instead, and trusts that news for one lease
length at most (a lease started since ends no sooner).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Collection

__all__ = ["FlowKey", "IdleKnowledge", "flow_key"]

#: Which flows a check was about (None: every flow).
FlowKey = frozenset[str] | None


def flow_key(flows: Collection[str] | str | None) -> FlowKey:
    """The key of a flows argument: None or a frozenset."""
    if flows is None:
        return None
    return frozenset([flows] if isinstance(flows, str) else flows)


class IdleKnowledge:
    """Checks proving that nothing was waiting, and the earliest lease end, on the
    local monotonic clock. Thread-safe."""

    def __init__(self, longest: float) -> None:
        #: Longest a check is trusted, events or not (a safety net).
        self.longest = longest
        self._lock = threading.Lock()
        self._wakes = 0  # one more per event that may make a job waiting
        self._resets = 0  # one more per event link (re)connect: events may be missed
        self._claims = 0  # one more per claimed event
        self._quiet: dict[FlowKey, tuple[int, float]] = {}  # flows -> (wakes, checked at)
        # flows -> (resets, checked at): for waiters on wake-up tokens, whom a post
        # reaches through its token, so only a reconnect voids what a check proved.
        self._proved: dict[FlowKey, tuple[int, float]] = {}
        self._head = math.inf  # the earliest lease end the last check saw (local monotonic)
        # Claims heard of since: job -> (claim count, lease end (local monotonic)).
        self._recent: dict[str | None, tuple[int, float]] = {}
        self._offset: float | None = None  # server time - local monotonic time
        self._news = -math.inf  # when the latest check or heartbeat read the leases (local)
        self._fed = -math.inf  # when the latest heartbeat did (local)

    def mark(self) -> tuple[int, int, int]:
        """Taken before a check is sent: what :meth:`quiet` needs to trust it."""
        with self._lock:
            return self._wakes, self._claims, self._resets

    def woken(self, *, reset: bool = False) -> None:
        """An event says a job may be waiting; ``reset``: events (and wake-up
        tokens, after a restart) may have been missed."""
        with self._lock:
            self._wakes += 1
            self._quiet.clear()
            if reset:
                self._resets += 1
                self._proved.clear()

    def mark_tokens(self) -> int:
        """Taken before a check by a waiter on wake-up tokens."""
        with self._lock:
            return self._resets

    def claimed(self, ends: float | None, job: str | None = None) -> None:
        """Someone claimed ``job``, whose lease ends at server time ``ends``."""
        with self._lock:
            self._claims += 1
            if ends is None or self._offset is None:
                self._head = -math.inf  # unknown: check again
            else:
                self._recent[job] = (self._claims, ends - self._offset)

    def ended(self, job: str | None) -> None:
        """``job``'s claim ended (finished, abandoned, expired): its lease end no
        longer matters, so idle waiters do not wake for it."""
        with self._lock:
            self._recent.pop(job, None)

    @property
    def _lease_end(self) -> float:
        """The earliest known lease end (local monotonic)."""
        return min(self._head, min((end for _, end in self._recent.values()), default=math.inf))

    def quiet(
        self,
        flows: FlowKey,
        mark: tuple[int, int, int],
        answered: float,
        server_now: float,
        lease_end: float | None,
    ) -> None:
        """A check answered at local time ``answered`` (server time ``server_now``,
        read before) found no job of ``flows`` waiting; the earliest lease ends at
        server time ``lease_end``. Lease ends are placed on the local clock as seen
        from the answer, so a waiter wakes after them (by the reply's travel), never
        before."""
        wakes, claims, resets = mark
        with self._lock:
            self._offset = server_now - answered
            local_end = math.inf if lease_end is None else lease_end - self._offset
            self._head = local_end
            self._news = max(self._news, answered)
            # Claims heard of before the check are in its answer; later ones count too.
            self._recent = {j: c for j, c in self._recent.items() if c[0] > claims}
            if self._wakes == wakes:
                self._quiet[flows] = (wakes, answered)
            if resets == self._resets:
                self._proved[flows] = (resets, answered)

    def heard(self, answered: float, server_now: float, lease_end: float | None) -> None:
        """A heartbeat answered at local time ``answered`` (server time ``server_now``)
        read the earliest lease end (server time; None when nothing is claimed)."""
        with self._lock:
            self._offset = server_now - answered
            self._head = math.inf if lease_end is None else lease_end - self._offset
            self._news = max(self._news, answered)
            self._fed = max(self._fed, answered)

    def fed_within(self, seconds: float) -> bool:
        """Whether a heartbeat brought news of the leases in the last ``seconds``."""
        return time.monotonic() - self._fed < seconds

    def lease_end(self) -> float:
        """The earliest known lease end (local monotonic; inf when none)."""
        with self._lock:
            return self._lease_end

    def proved_until(self, flows: FlowKey, horizon: float | None = None) -> float | None:
        """Like :meth:`until` for a waiter on wake-up tokens: posts since the check
        left tokens for it, so only a reconnect or the first lease end void it.
        ``horizon``: how long the latest news of the leases holds (None: for ever,
        every claim is heard of as it is made)."""
        with self._lock:
            known = self._proved.get(flows)
            if known is None or known[0] != self._resets:
                return None
            until = min(self._lease_end, known[1] + self.longest)
            if horizon is not None:
                until = min(until, max(known[1], self._news) + horizon)
        return until if time.monotonic() < until else None

    def until(self, flows: FlowKey) -> float | None:
        """Local monotonic time until which no job of ``flows`` can be waiting, or
        None when the server must be asked."""
        with self._lock:
            known = self._quiet.get(flows)
            if known is None or known[0] != self._wakes:
                return None
            until = min(self._lease_end, known[1] + self.longest)
        return until if time.monotonic() < until else None
