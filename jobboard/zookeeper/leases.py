"""Leases on a ZooKeeper board: renewing them, and noticing other owners' lapses.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Claims are bound to the owner's session; a claim may also
carry a lease, which ``renew`` extends with one transaction per claim (all in
one round trip) that also checks the state node, so a renew never lands on a
newer owner's claim. A lease ends at its claim node's mtime plus its length,
in the servers' time (no transaction reads a clock; see
:class:`~jobboard.zookeeper.liveness.ServerTime`). Its owner stops writing and
renewing as soon as that may have passed; ``claim_next`` reaps a claim once it
has by the board's reckoning of the server's time (deleting the claim node and
rewriting the state node, both version-checked, which fences the old owner
out), so the job waits again in its place. An idle board's ``wait`` wakes when
the first lease of another owner's claim runs out.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any, ClassVar

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from jobboard import errors
from jobboard.model import BoardEvent, Claim, ClaimStatus
from jobboard.zookeeper.nodes import (
    Fence,
    dump,
    expiry,
    id_parts,
    is_live,
    read_claim,
    read_state,
)
from jobboard.zookeeper.session import Refused, log
from jobboard.zookeeper.waiters import ZkWaiters


class ZkLeases(ZkWaiters):
    """Renewing our leases; waiting for work, and for other owners' leases to lapse."""

    LEASE_CHECK_INTERVAL: ClassVar[float]

    _last_lease_check: float

    def _reap_lapsed(self, flows: frozenset[str] | None, scan: bool) -> None:
        """Reap the leased claims (on jobs of ``flows``) that ran out by the server's
        time (as :meth:`ServerTime.now` reckons it), so that their jobs wait again
        in claim order.

        Claims read before whose lease end has passed are read again (a renew
        moves it); claims never read are read too when ``scan`` (new claims come
        at the rate jobs are taken, so ``claim_next`` scans at most every
        ``LEASE_CHECK_INTERVAL`` while other work waits). One round trip reads
        the state and claim nodes of them all, each state before its claim."""
        now = self._time.now()
        with self._lock:
            check = []
            for job_id in self._view.members["claims"] & self._view.members["jobs"]:
                if flows is not None and id_parts(job_id)[1] not in flows:
                    continue
                fence = self._fences.get(job_id) if job_id in self._held else None
                if fence is not None and (fence.lease is None or (fence.lease_end or 0) > now):
                    continue  # our own claim, session-bound or surely live
                known = self._claims.get(job_id)
                if (known is None and scan) or (known and not is_live(*known, now)):
                    check.append(job_id)
        if not check:
            return
        found = self._read(
            lambda: self._gather(
                [("get", self._path(kind, i)) for i in check for kind in ("state", "claims")]
            )
        )
        now = self._time.now()
        lapsed = []
        with self._lock:
            for n, job_id in enumerate(check):
                state, claim = found[2 * n], found[2 * n + 1]
                if claim is None:
                    continue
                data = read_claim(claim[0], job_id)
                self._claims[job_id] = (data, claim[1])
                if state is not None and not is_live(data, claim[1], now):
                    lapsed.append((job_id, state, claim[1].version))
        for job_id, state, claim_version in lapsed:
            self._reap(job_id, read_state(state[0], job_id), state[1].version, claim_version)

    # -- waiting ----------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a waiting job of ``flows`` may be available. Woken by the
        watches (a post, a claim node deleted: a released job or an expired
        session), and when the first lease of another owner's claim runs out,
        so that a dead owner's leased job is taken over at its lease's end, and when
        a job posted for later falls due.

        A board that finds no work queues behind the other idle boards of the
        same flows (:mod:`jobboard.zookeeper.waiters`): only the first in line
        wakes for work; the next one wakes when work waits while the first is
        busy, or when the first goes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flows = None if flows is None else frozenset(flows)
        self._waiting_again(flows)
        while True:
            place = self._place(flows)
            active = place is None or place.head
            lapse = self._next_lapse(flows) if active else None
            leased = place is None and self._holds_lease()
            with self._changed:
                if active and self._view.best(flows, pop=False) is not None:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._closed:
                    return False
                join = place is None and not leased
                if lapse is not None:
                    until = lapse - self._time.now()
                    if until <= 0:
                        self._last_lease_check = 0.0  # claim_next looks at once
                        return True
                    remaining = until if remaining is None else min(remaining, until)
                due = self._view.next_due() if active else None
                if due is not None:  # a job posted for later: wake when it is due
                    until_due = max(0.0, due - time.time()) + 0.001
                    remaining = until_due if remaining is None else min(remaining, until_due)
                if not join:
                    self._changed.wait(remaining)
            if join:
                self._join(flows)

    def _next_lapse(self, flows: frozenset[str] | None) -> float | None:
        """Board time when the first leased claim of another owner (on a job of
        ``flows``) runs out, as far as known. Claims not known yet, and those whose
        known lease has run out (renewed since, maybe), are read first, in one
        round trip; session-bound claims are read once."""
        with self._lock:
            ids = [
                i
                for i in self._view.members["claims"] & self._view.members["jobs"]
                if i not in self._held and (flows is None or id_parts(i)[1] in flows)
            ]
            now = self._time.now()
            stale = [i for i in ids if i not in self._claims or not is_live(*self._claims[i], now)]
        if stale and not self._closed:
            try:
                found = self._gather([("get", self._path("claims", i)) for i in stale])
            except (KazooException, KazooTimeoutError, errors.BoardError):
                found = [None] * len(stale)  # connection trouble: the state listener handles it
            with self._lock:
                for job_id, item in zip(stale, found, strict=True):
                    claim = read_claim(item[0], job_id) if item else None
                    if claim is not None:
                        self._claims[job_id] = (claim, item[1])
        with self._lock:
            ends = [expiry(*self._claims[i]) for i in ids if i in self._claims]
        known = [end for end in ends if end is not None]
        return min(known) if known else None

    # -- reaping ----------------------------------------------------------------

    def _reap(
        self,
        job_id: str,
        state: dict[str, Any],
        state_version: int,
        claim_version: int,
    ) -> bool:
        """End a claim whose lease ran out: one transaction deletes the claim node
        (at the version judged lapsed) and rewrites the state node (at the version
        read no later than it), so the lapsed owner's fenced writes, which check
        both versions, all fail from now on. False if either moved meanwhile."""
        owner = state.get("owner")
        reaped = {**state, "updated_at": time.time(), "last_error": f"lease of {owner} expired"}
        try:
            results = self._transact(
                [
                    ("delete", self._path("claims", job_id), claim_version),
                    ("set", self._path("state", job_id), dump(reaped), state_version),
                ]
            )
        except (Refused, KazooException, KazooTimeoutError) as err:
            # moved meanwhile, or connection trouble (a later look reaps it if need be)
            log.debug("%s: lease of %s not reaped: %r", self, job_id, err)
            with self._lock:
                self._states.pop(job_id, None)
                self._claims.pop(job_id, None)
            return False
        with self._lock:
            self._states[job_id] = (reaped, results[1].version)
            self._claims.pop(job_id, None)
        self._local("claims", job_id, False)
        self._emit(BoardEvent("expired", job_id, {"token": state.get("token"), "owner": owner}))
        return True

    # -- renewing ---------------------------------------------------------------

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        started = self._local_clock()
        length = None if lease is None else self._lease_for(lease)
        out: dict[str, Claim | None] = {}
        to_write: list[tuple[Claim, Fence]] = []
        to_read: list[Claim] = []
        for claim in claims:
            fence = self._fences.get(claim.job_id)
            held = self._held.get(claim.job_id)
            if (
                fence is None
                or held is None
                or fence.token != claim.token
                or fence.owner != claim.owner
            ):
                to_read.append(claim)
            elif self.claim_status(claim) is ClaimStatus.LOST or not self._lease_runs(fence):
                out[claim.job_id] = None  # lost, or its lease may have run out by server time
            elif fence.lease is None:
                out[claim.job_id] = held
            else:
                to_write.append((claim, fence))
        if to_read:
            out.update(self._read(lambda: self._renew_foreign(to_read)))
        if to_write:
            out.update(self._renew_leases(to_write, length, started))
        with self._lock:
            cancels = self._view.members["cancel"] & set(out)
        for job_id in cancels:
            if out[job_id] is not None:
                self._mark_cancel(job_id)
        self._apply_renewals(out)
        return out

    def _renew_foreign(self, claims: list[Claim]) -> dict[str, Claim | None]:
        """Check claims this board did not make against the stored claim nodes."""
        found = self._gather([("get", self._path("claims", c.job_id)) for c in claims])
        out: dict[str, Claim | None] = {}
        for claim, item in zip(claims, found, strict=True):
            data = read_claim(item[0], claim.job_id) if item else None
            ok = (
                data is not None
                and data.get("owner") == claim.owner
                and data.get("token") == claim.token
                and is_live(data, item[1], self._time.latest())
            )
            out[claim.job_id] = claim if ok else None
        return out

    def _renew_leases(
        self, pairs: list[tuple[Claim, Fence]], length: float | None, started: float
    ) -> dict[str, Claim | None]:
        """Rewrite our leased claim nodes, all transactions pipelined.

        Each renew is one transaction that checks the state node's version (no
        one claimed since: a takeover re-creates the claim node, whose version
        starts again at 0, but always moves the state node) with the
        version-checked rewrite of the claim node. A renew whose job finished
        meanwhile is reported lost and leaves nothing behind. The rewritten
        node's mtime tells when the renew was applied in server time: one that
        landed after the lease's end (sent just before it) is undone, the lease
        reaped, and reported lost: a lapsed claim never comes back."""
        client = self.client
        pending = []
        sent = time.time()
        for claim, fence in pairs:
            new_lease = length if length is not None else fence.lease
            assert new_lease is not None  # only leased claims are rewritten
            data = dump(
                {
                    "owner": fence.owner,
                    "token": fence.token,
                    "lease": new_lease,
                    "claimed_at": time.time(),
                }
            )
            tx = client.transaction()
            tx.check(self._path("state", claim.job_id), fence.state_version)
            tx.set_data(self._path("claims", claim.job_id), data, version=fence.claim_version)
            pending.append((claim, fence, new_lease, tx.commit_async()))
        out: dict[str, Claim | None] = {}
        now = time.time()
        for claim, fence, new_lease, result in pending:
            try:
                results = result.get(timeout=self.session_timeout)
            except (KazooException, KazooTimeoutError) as err:
                raise self._translate(err, f"renew {claim.job_id}") from err
            stat = results[-1]
            if not isinstance(stat, Exception):
                self._time.learn(sent, time.time(), stat.mtime)
                if fence.lease_end is None or stat.mtime / 1000.0 >= fence.lease_end:
                    assert fence.state_version is not None  # a claim wrote the state node
                    self._reap(claim.job_id, fence.state, fence.state_version, stat.version)
                    out[claim.job_id] = None  # applied after the lease had run out
                    continue
            with self._lock:
                current = self._fences.get(claim.job_id)
                if isinstance(stat, Exception) or current is None or current.token != fence.token:
                    out[claim.job_id] = None  # taken over, finished or released meanwhile
                    continue
                self._fences[claim.job_id] = replace(
                    current,
                    claim_version=max(stat.version, current.claim_version or 0),
                    lease=new_lease,
                    lease_end=stat.mtime / 1000.0 + new_lease,
                )
            out[claim.job_id] = replace(
                claim, lease=new_lease, expires_at=now + new_lease, deadline=started + new_lease
            )
        return out
