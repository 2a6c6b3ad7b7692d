"""Leases on a ZooKeeper board: renewing them, and noticing other owners' lapses.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Claims are bound to the owner's session; a claim may also
carry a lease, which ``renew`` extends with one transaction per claim (all in
one round trip) that also checks the state node, so a renew never lands on a
newer owner's claim. An idle board's ``wait`` wakes when the first lease of
another owner's claim runs out, and ``claim_next`` then takes that job.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import ClassVar

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from jobboard import errors
from jobboard.model import Claim, ClaimStatus
from jobboard.zookeeper.nodes import Fence, dump, expiry, id_parts, is_live, read_claim
from jobboard.zookeeper.writes import ZkWrites


class ZkLeases(ZkWrites):
    """Renewing our leases; waiting for work, and for other owners' leases to lapse."""

    LEASE_CHECK_INTERVAL: ClassVar[float]

    _last_lease_check: float

    def _lapsed_lease(self, flows: frozenset[str] | None, tried: set[str]) -> str | None:
        """A claimed job whose lease ran out (leased claims only), looked for at most
        every ``LEASE_CHECK_INTERVAL`` by an idle ``claim_next``."""
        now = time.monotonic()
        if now - self._last_lease_check < self.LEASE_CHECK_INTERVAL:
            return None
        self._last_lease_check = now
        with self._lock:
            candidates = [
                i
                for i in self._view.members["claims"] & self._view.members["jobs"]
                if i not in tried
                and i not in self._held
                and (flows is None or id_parts(i)[1] in flows)
                and (i not in self._claims or self._claims[i][0].get("lease") is not None)
            ]
        if not candidates:
            return None
        found = self._read(
            lambda: self._gather([("get", self._path("claims", i)) for i in candidates])
        )
        lapsed = []
        with self._lock:
            for job_id, item in zip(candidates, found, strict=True):
                if item is None:
                    continue
                claim = read_claim(item[0], job_id)
                self._claims[job_id] = (claim, item[1])
                if not is_live(claim, item[1]):
                    rank, _, seq = id_parts(job_id)
                    lapsed.append((rank, seq, job_id))
        return min(lapsed)[2] if lapsed else None

    # -- waiting ----------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a waiting job of ``flows`` may be available. Woken by the
        watches (a post, a claim node deleted: a released job or an expired
        session), and when the first lease of another owner's claim runs out,
        so that a dead owner's leased job is taken over at its lease's end, and when
        a job posted for later falls due."""
        deadline = None if timeout is None else time.monotonic() + timeout
        flows = None if flows is None else frozenset(flows)
        while True:
            lapse = self._next_lapse(flows)
            with self._changed:
                if self._view.best(flows, pop=False) is not None:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._closed:
                    return False
                if lapse is not None:
                    until = lapse - time.time()
                    if until <= 0:
                        self._last_lease_check = 0.0  # claim_next looks at once
                        return True
                    remaining = until if remaining is None else min(remaining, until)
                due = self._view.next_due()  # a job posted for later: wake when it is due
                if due is not None:
                    until_due = max(0.0, due - time.time()) + 0.001
                    remaining = until_due if remaining is None else min(remaining, until_due)
                self._changed.wait(remaining)

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
            stale = [i for i in ids if i not in self._claims or not is_live(*self._claims[i])]
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
            elif self.claim_status(claim) is ClaimStatus.LOST:
                out[claim.job_id] = None
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
                and is_live(data, item[1])
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
        meanwhile is reported lost and leaves nothing behind."""
        client = self.client
        pending = []
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
            with self._lock:
                current = self._fences.get(claim.job_id)
                if isinstance(stat, Exception) or current is None or current.token != fence.token:
                    out[claim.job_id] = None  # taken over, finished or released meanwhile
                    continue
                self._fences[claim.job_id] = replace(
                    current,
                    claim_version=max(stat.version, current.claim_version or 0),
                    lease=new_lease,
                )
            out[claim.job_id] = replace(
                claim, lease=new_lease, expires_at=now + new_lease, deadline=started + new_lease
            )
        return out
