"""Claiming and renewing on a ZooKeeper board.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). A claim is one transaction: check the job node exists, create
the ephemeral ``claims/<id>`` and create or version-check-and-set
``state/<id>`` with the next token, with the read of the job's content and
the watching read of the new claim node pipelined behind it. ``claim_next``
takes the best job from the local view (after reaping lapsed leases, so that
their jobs wait in their place); after losing a race it spreads over the few
best jobs for a while. A job claimed ``max_attempts`` times is trashed
as poison by the claim that finds it, and so is a job whose record does not
read. Leases (optional: claims are bound to the session) live in
:mod:`jobboard.zookeeper.leases`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any, ClassVar

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat

from jobboard import errors
from jobboard.changes import Ending
from jobboard.model import BoardEvent, Claim, JobRef, JobState
from jobboard.zookeeper.leases import ZkLeases
from jobboard.zookeeper.nodes import (
    Fence,
    active_job,
    due_of,
    dump,
    expiry,
    finish_record,
    is_live,
    is_scheduled,
    read_claim,
    read_state,
    read_static,
    unreadable,
)
from jobboard.zookeeper.session import Refused, log


class _Adopt(Exception):
    """A claim node found by a retried claim is our own (its earlier attempt went through)."""

    def __init__(self, claim: dict[str, Any], stat: ZnodeStat) -> None:
        super().__init__("our own claim")
        self.claim, self.stat = claim, stat


class _Pending:
    """A claim's transaction being sent: its operations, the records it writes, and
    the reads sent behind it (the job's content when not cached, the watching read
    of the new claim node)."""

    def __init__(
        self,
        board: ZkClaims,
        job_id: str,
        who: str,
        lease: float | None,
        fresh: bool,
        new_state: dict[str, Any],
        claim_data: dict[str, Any],
        ops: list[tuple[Any, ...]],
    ) -> None:
        self.board, self.job_id, self.who, self.lease, self.fresh = board, job_id, who, lease, fresh
        self.new_state, self.claim_data, self.ops = new_state, claim_data, ops
        self.state_op = len(ops) - 1
        self.static: dict[str, Any] | None = None
        self.static_read: Any = None
        self.verify: list[Any] = []
        self.sent = 0.0

    def prepare(self, static: dict[str, Any] | None) -> None:
        """Just before the transaction is sent: read the job's content when not cached
        (the transaction checks the node, which never changes), note the time."""
        self.static = static
        if static is None:
            self.static_read = self.board.client.get_async(self.board._path("jobs", self.job_id))
        self.sent = time.time()

    def send(self) -> Any:
        """The watching read of the claim node, sent behind the transaction (see the
        ``after`` of ``_transact``)."""
        return self.board._watch_claim(self.job_id, self.verify)


class ZkClaims(ZkLeases):
    """Claims (session-bound, optionally leased)."""

    CLAIM_SPREAD: ClassVar[int]
    CONTENTION_MEMORY: ClassVar[float]

    _explicit_lease: bool
    _contended_until: float

    # -- claiming ---------------------------------------------------------------

    def _claim_lease(self, lease: float | None) -> float | None:
        """The lease of a new claim: None (session-bound) unless one was asked for."""
        if lease is not None:
            return self._lease_for(lease)
        return self.lease if self._explicit_lease else None

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._require_id(job)
        self._check_owner_args(job_id, who, 0, False)
        length = self._claim_lease(lease)
        if is_scheduled(job_id) and self.get(job_id).state is JobState.SCHEDULED:
            raise errors.UnclaimableJob(
                f"job {job_id!r} is scheduled until {due_of(job_id)}; it cannot be claimed yet"
            )
        claim = self._retrying(f"claim {job_id}", lambda u: self._claim_id(job_id, who, length, u))
        if claim is None:
            raise errors.UnclaimableJob(
                f"job {job_id!r} was trashed instead: a poison job, or its record does not read "
                "(see its last_error)"
            )
        self._took(None, length, every=True)
        return claim

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        self._check_owner_args("?", who, 0, False)
        length = self._claim_lease(lease)
        flows = None if flows is None else frozenset(flows)
        if self._queued_behind(flows):
            return None  # another idle board is first in line (see ``waiters``)
        tried: set[str] = set()
        now = time.monotonic()
        with self._lock:
            idle = self._view.best(flows, pop=False) is None
        self._reap_before_claim(flows, idle, now)
        while True:
            with self._lock:
                job_id = self._next_in_view(flows)
            if job_id is None:
                return None
            if job_id in tried:
                continue
            tried.add(job_id)
            try:
                claim = self._retrying(
                    f"claim {job_id}",
                    functools.partial(self._claim_id, job_id, who, length, probe=False),
                )
            except (errors.UnclaimableJob, errors.JobNotFound):
                continue
            except BaseException:
                with self._lock:
                    self._view.push(job_id)
                raise
            if claim is not None:
                self._took(flows, length)
                return claim

    def _reap_before_claim(self, flows: frozenset[str] | None, idle: bool, now: float) -> None:
        """Reap lapsed leases before a claim, so that their jobs wait again in their
        place: every known claim is looked at when idle, else every
        ``LEASE_CHECK_INTERVAL`` (see ``_reap_lapsed``)."""
        scan = idle or now - self._last_lease_check >= self.LEASE_CHECK_INTERVAL
        if scan:
            self._last_lease_check = now
        self._reap_lapsed(flows, scan)

    def _next_in_view(self, flows: frozenset[str] | None) -> str | None:
        """Pop the job to try next (lock held): the best, or for a while after a lost
        race one of the ``CLAIM_SPREAD`` best."""
        if time.monotonic() < self._contended_until:
            return self._view.spread(flows, self.CLAIM_SPREAD)
        return self._view.best(flows, pop=True)

    def _claim_id(
        self, job_id: str, who: str, lease: float | None, uncertain: bool, probe: bool = True
    ) -> Claim | None:
        """Claim one job: one transaction creating our claim node and writing the state
        node; the job's static part is read in the same round trip when not cached.
        Returns None when the job was trashed as poison instead."""
        started = self._local_clock()
        with self._lock:
            static = self._static.get(job_id)
            cached = self._states.get(job_id)
        state, state_version = cached if cached is not None else (None, None)
        lapsed_version: int | None = None
        for _ in range(self.MAX_ROUNDS):
            attempts = (state or {}).get("attempts", 0)
            if attempts > 0 or unreadable(state):
                if static is None:
                    found = self._gather([("get", self._path("jobs", job_id))])[0]
                    if found is None:
                        self._job_gone(job_id)
                    static = read_static(found[0], job_id)
            problem = unreadable(static, state)
            poison = attempts > 0 and static is not None and attempts >= static["max_attempts"]
            if problem is not None or poison:
                assert static is not None
                if problem is None:
                    problem = self._poison_reason(attempts, static["max_attempts"])
                fence = Fence(None, 0, state_version, lapsed_version, static, state or {})
                if self._trash_as_claimant(job_id, fence, problem, poison=poison):
                    return None
                # refused: a claim node we did not know of (a lapsed lease, or a live
                # claim), or the state moved; read both again and decide anew
                state, state_version, lapsed_version = self._reread(job_id, who, uncertain)
                continue
            pending = self._claim_write(job_id, who, lease, state, state_version, lapsed_version)
            pending.prepare(static)
            try:
                results = self._transact(pending.ops + self._counted("claimed"), pending.send)
            except Refused as refused:
                op = pending.ops[refused.index]
                if op[0] == "check":
                    self._job_gone(job_id, probe)
                if op[0] == "create" and op[1] == self._path("claims", job_id):
                    if not probe and not uncertain:  # claim_next: just try the next job
                        self._contended(job_id)
                        raise errors.UnclaimableJob(f"job {job_id!r} is claimed") from None
                try:
                    state, state_version, lapsed_version = self._reread(job_id, who, uncertain)
                except _Adopt as adopt:
                    return self._adopt_claim(job_id, adopt.claim, adopt.stat, who, started)
                continue
            return self._claim_landed(pending, results[pending.state_op], started)
        raise errors.UnclaimableJob(f"job {job_id!r}: too much contention, try again")

    def _contended(self, job_id: str) -> None:
        """Another board took the job we tried: spread our next tries for a while."""
        self._contended_until = time.monotonic() + self.CONTENTION_MEMORY
        self._local("claims", job_id, True)

    def _claim_write(
        self,
        job_id: str,
        who: str,
        lease: float | None,
        state: dict[str, Any] | None,
        state_version: int | None,
        lapsed_version: int | None,
    ) -> _Pending:
        """The operations of a claim of a job whose state (and version) is known: the
        job exists, the claim node is created (replacing a lapsed one), the state
        moves to the next token under its version. Not counted."""
        now = time.time()
        token = (state or {}).get("token", 0) + 1
        new_state = {
            **(state or {}),
            "token": token,
            "attempts": (state or {}).get("attempts", 0) + 1,
            "owner": who,
            "claimed_at": now,
            "updated_at": now,
            "released_by": None,
            "forced": False,
        }
        claim_data = {"owner": who, "token": token, "lease": lease, "claimed_at": now}
        ops: list[tuple[Any, ...]] = [("check", self._path("jobs", job_id), -1)]
        if lapsed_version is not None:
            ops.append(("delete", self._path("claims", job_id), lapsed_version))
        ops.append(("create", self._path("claims", job_id), dump(claim_data), True))
        if state_version is None:
            ops.append(("create", self._path("state", job_id), dump(new_state), False))
        else:
            ops.append(("set", self._path("state", job_id), dump(new_state), state_version))
        return _Pending(self, job_id, who, lease, state is None, new_state, claim_data, ops)

    def _claim_landed(self, pending: _Pending, state_result: Any, started: float) -> Claim | None:
        """A claim's transaction went through (``state_result``: its state write's
        answer): record it, or trash the job under our claim when its record does
        not read (None)."""
        job_id, who, lease = pending.job_id, pending.who, pending.lease
        static = pending.static
        if pending.static_read is not None:  # job nodes never change: the transaction checked it
            static = read_static(pending.static_read.get(timeout=self.session_timeout)[0], job_id)
        assert static is not None
        new_version = 0 if pending.fresh else state_result.version
        problem = unreadable(static)
        if problem is not None:  # ours now: trash it under our own claim
            fence = Fence(who, pending.new_state["token"], new_version, 0, static, pending.new_state)
            self._trash_as_claimant(job_id, fence, problem)
            return None
        return self._claimed(
            job_id,
            static,
            pending.new_state,
            new_version,
            pending.claim_data,
            who,
            lease,
            started,
            pending.fresh,
            verify=pending.verify[0] if pending.verify else None,
            # the claim node's mtime (when its lease starts) is no earlier than this
            lease_end=None if lease is None else pending.sent + self._time.low + lease,
        )

    def _reread(
        self, job_id: str, who: str, uncertain: bool
    ) -> tuple[dict[str, Any] | None, int | None, int | None]:
        """Read a job's state and claim nodes again (the state first, so that a claim
        node judged lapsed is never one created after the state version read: every
        takeover moves the state). Returns the state, its version and the version of
        a lapsed claim node to replace (None: there is none). Raises
        ``UnclaimableJob`` while another claim holds, ``_Adopt`` for our own claim
        made by an attempt whose answer was lost."""
        found, held = self._gather(
            [("get", self._path("state", job_id)), ("get", self._path("claims", job_id))]
        )
        state, state_version = (
            (read_state(found[0], job_id), found[1].version) if found else (None, None)
        )
        with self._lock:
            self._states[job_id] = (state, state_version)
        if held is None:
            return state, state_version, None
        other = read_claim(held[0], job_id)
        token = (state or {}).get("token")
        if uncertain and other.get("owner") == who and other.get("token") == token:
            raise _Adopt(other, held[1])
        if not is_live(other, held[1], self._time.now()):
            return state, state_version, held[1].version
        self._local("claims", job_id, True)
        raise errors.UnclaimableJob(
            f"job {job_id!r} is claimed by {other.get('owner')!r}; it cannot be claimed"
        )

    def _job_gone(self, job_id: str, probe: bool = True) -> None:
        """Raise for a job that is no longer active (finished or unknown)."""
        self._local("jobs", job_id, False)
        if not probe:
            raise errors.UnclaimableJob(f"job {job_id!r} is no longer waiting")
        done = self._gather([("exists", self._path("done", job_id))])[0]
        if done is None:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        raise errors.UnclaimableJob(f"job {job_id!r} is finished; it cannot be claimed")

    def _adopt_claim(
        self, job_id: str, claim: dict[str, Any], stat: ZnodeStat, who: str, started: float
    ) -> Claim:
        """Our earlier attempt went through before the connection dropped: take it."""
        static, state = self._gather(
            [("get", self._path("jobs", job_id)), ("get", self._path("state", job_id))]
        )
        if static is None or state is None:
            raise errors.UnclaimableJob(f"job {job_id!r} changed while reconnecting")
        return self._claimed(
            job_id,
            read_static(static[0], job_id),
            read_state(state[0], job_id),
            state[1].version,
            claim,
            who,
            claim.get("lease"),
            started,
            False,
            claim_version=stat.version,
            lease_end=expiry(claim, stat),
        )

    def _claimed(
        self,
        job_id: str,
        static: dict[str, Any],
        state: dict[str, Any],
        state_version: int,
        claim_data: dict[str, Any],
        who: str,
        lease: float | None,
        started: float,
        fresh: bool,
        claim_version: int = 0,
        verify: Any = None,
        lease_end: float | None = None,
    ) -> Claim:
        """Record a successful claim locally and build the Claim (``lease_end``: server
        time no later than its lease's end)."""
        token = state["token"]
        fence = Fence(who, token, state_version, claim_version, static, state, lease, lease_end)
        with self._lock:
            self._static[job_id] = static
            self._states[job_id] = (state, state_version)
            self._fences[job_id] = fence
            self._progress[job_id] = set() if fresh else None
            self._progress_dir[job_id] = not fresh
            cancel = job_id in self._view.members["cancel"]
        self._local("claims", job_id, True)
        job = active_job(job_id, static, state, claim_data, None, cancel)
        now = time.time()
        claim = Claim(
            job_id=job_id,
            owner=who,
            token=token,
            lease=lease,
            expires_at=None if lease is None else now + lease,
            deadline=math.inf if lease is None else started + lease,
            job=job if lease is None else replace(job, lease_expires_at=now + lease),
        )
        self._track(claim)
        if cancel:
            self._mark_cancel(job_id)
        if verify is None:
            self._verify_claim(job_id)
        else:  # the watching read went out with the claim: its answer is here or close
            verify.wait(self.session_timeout)
            self._claim_verified(job_id, token, verify)
        self._emit(BoardEvent("claimed", job_id, {"token": token, "owner": who}))
        return claim

    def _trash_as_claimant(
        self, job_id: str, fence: Fence, reason: str, *, poison: bool = False
    ) -> bool:
        """Trash a job met by a claim: a poison job (claimed ``max_attempts``
        times without finishing), or one whose record does not read. ``fence``
        names the state and claim versions seen (claim version None: nobody may
        hold a claim meanwhile). False when that was refused (the versions moved)."""
        current = active_job(job_id, fence.static, fence.state, None, None, False)
        with self._lock:
            cancel = job_id in self._view.members["cancel"]
        who = "poison" if poison else "board"
        end = Ending(job_id, who, None, JobState.TRASHED, True, None, reason, "trashed")
        done = finish_record(current, end)
        if self._commit_finish(job_id, fence, done, cancel, poison=poison) is None:
            if fence.owner is not None:  # our own claim on it: let it go
                self._transact_quietly([("delete", self._path("claims", job_id), -1)])
                return True
            return False
        log.warning("%s: job %s trashed: %s", self, job_id, reason)
        self._emit(BoardEvent("trashed", job_id, {"reason": reason, "forced": True}))
        return True

    def _transact_quietly(self, ops: list[tuple[Any, ...]]) -> None:
        try:
            self._transact(ops)
        except (Refused, KazooException, KazooTimeoutError) as err:
            log.debug("%s: %s", self, err)
