"""Consume a job and claim the next one in one transaction on a ZooKeeper board.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard`. ``consume_and_claim_next``
sends one multi-op transaction: the finishing operations of the consumed job,
fenced exactly as ``consume`` fences them (our claim's versions, checked with
the write), followed by the claim operations of the job the local view picks,
exactly as ``claim_next`` claims one job. ZooKeeper applies all of them or
none, so:

* refused by the consume part: nothing happened; the plain consume runs (it
  raises as a refused consume does, or goes through when only a version we
  knew moved), then ``claim_next``;
* refused by the claim part (another board took the job, its state moved, it
  is gone): nothing happened either; the plain consume, then ``claim_next``;
* no answer (connection trouble): once connected again, the job's ``done/``
  node tells whether the pair went through; if so the new claim is adopted
  as a retried ``claim`` adopts its own earlier claim.

The pair is only folded in the plain case: our own claim whose fence is known
locally, a next job waiting in the view that was never claimed before (a job
with earlier attempts may be poison) and whose records read. Anything else
takes the two steps, which handle every case already.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from jobboard import errors
from jobboard.changes import Ending
from jobboard.finishing import ConsumedNext
from jobboard.model import Claim, Job
from jobboard.zookeeper.claims import ZkClaims, _Pending
from jobboard.zookeeper.nodes import active_job, finish_record, unreadable
from jobboard.zookeeper.session import Refused


class ZkConsumeNext(ZkClaims):
    """``consume_and_claim_next`` as one transaction (see the module docstring)."""

    def _finish_and_claim_next(
        self,
        end: Ending,
        progress: Mapping[str, str] | None,
        flows: Collection[str] | None,
        lease: float | None,
    ) -> ConsumedNext:
        two_steps = super()._finish_and_claim_next
        wanted = None if flows is None else frozenset(flows)
        try:
            fence = None if end.force else self._own_fence(end.job_id, end.who, end.token)
        except errors.NotOwner:
            fence = None  # the plain consume raises it, and forgets the claim
        if fence is None or self._queued_behind(wanted):
            return two_steps(end, progress, flows, lease)
        length = self._claim_lease(lease)
        picked = self._pick_next(wanted, end.job_id)
        if picked is None:
            return two_steps(end, progress, flows, lease)
        next_id, static, state, state_version = picked
        job_id, who = end.job_id, end.who
        with self._lock:
            cancel = job_id in self._view.members["cancel"]
        current = active_job(job_id, fence.static, fence.state, {"owner": who}, None, cancel)
        finish_ops, done = self._finish_ops(
            job_id, fence, finish_record(current, end), cancel, progress=progress
        )
        pending = self._claim_write(next_id, who, length, state, state_version, None)
        ops = finish_ops + pending.ops
        consumed: list[Any] = []

        def attempt(uncertain: bool) -> ConsumedNext | None:
            if uncertain:
                return self._after_lost_answer(end, done, consumed, pending, wanted)
            pending.prepare(static)
            started = self._local_clock()
            self._dropping.add(job_id)  # the claim node's deletion is ours (_drop_own_claim)
            try:
                results = self._transact(ops + self._counted("claimed"), pending.send)
            except BaseException as err:
                self._dropping.discard(job_id)
                if isinstance(err, Refused):
                    self._verify_claim(job_id)
                    self._refused(job_id, next_id, ops[err.index], err, len(finish_ops))
                    return None
                if isinstance(err, errors.InvalidJob):  # too big with the claim: not sent
                    with self._lock:
                        self._view.push(next_id)
                    return None
                raise
            consumed.append(self._finished(job_id, done))
            self._emit(end.published(fence.token, current.flow))
            state_result = results[len(finish_ops) + pending.state_op]
            claim = self._claim_landed(pending, state_result, started)
            return self._landed(consumed[0], claim, who, wanted, length, lease)

        folded = self._retrying(f"consume {job_id} and claim {next_id}", attempt)
        if folded is None:  # refused: nothing was written
            return two_steps(end, progress, flows, lease)
        return folded

    def _pick_next(
        self, wanted: frozenset[str] | None, consumed: str
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None, int | None] | None:
        """The job ``claim_next`` would try first, with its cached records, when its
        claim can be folded: never claimed before, records readable. Otherwise
        None (the view keeps the job)."""
        with self._lock:
            if self._view.best(wanted, pop=False) is None:
                return None  # idle: claim_next also looks for lapsed leases
        try:
            self._reap_before_claim(wanted, False, time.monotonic())
        except errors.BoardError:
            return None
        with self._lock:
            next_id = self._next_in_view(wanted)
            if next_id is None:
                return None
            static = self._static.get(next_id)
            state, state_version = self._states.get(next_id) or (None, None)
            if (
                next_id == consumed
                or (state or {}).get("attempts", 0) > 0
                or unreadable(static, state) is not None
            ):
                self._view.push(next_id)
                return None
        return next_id, static, state, state_version

    def _refused(
        self, job_id: str, next_id: str, op: tuple[Any, ...], refused: Refused, split: int
    ) -> None:
        """What a refused pair tells: about the consumed job when an operation of the
        consume failed, else about the job we tried to claim."""
        if refused.index < split:
            self._finish_refused(job_id, op, refused)
            with self._lock:
                self._view.push(next_id)
        elif op[0] == "check":  # the job is gone
            self._local("jobs", next_id, False)
        elif op[0] == "create" and op[1] == self._path("claims", next_id):
            self._contended(next_id)  # another board claimed it
        else:  # its state moved: read it again when claimed
            with self._lock:
                self._states.pop(next_id, None)
                self._view.push(next_id)

    def _after_lost_answer(
        self,
        end: Ending,
        done: dict[str, Any],
        consumed: list[Any],
        pending: _Pending,
        wanted: frozenset[str] | None,
    ) -> ConsumedNext | None:
        """The pair's answer was lost: find out from ``done/`` whether it went through
        (None: it did not); if so, adopt the claim it made."""
        if not consumed:
            finished = self._finished_by_us(end.job_id, end.who, end.token, end.state)
            if finished is None:
                with self._lock:
                    self._view.push(pending.job_id)
                return None
            consumed.append(self._finished(end.job_id, done))
            self._emit(end.published(end.token or 0, consumed[0].flow))
        try:
            claim = self._claim_id(pending.job_id, end.who, pending.lease, True, probe=False)
        except (errors.UnclaimableJob, errors.JobNotFound):
            claim = None
        return self._landed(consumed[0], claim, end.who, wanted, pending.lease, pending.lease)

    def _landed(
        self,
        finished: Job,
        claim: Claim | None,
        who: str,
        wanted: frozenset[str] | None,
        length: float | None,
        lease: float | None,
    ) -> ConsumedNext:
        """The pair went through: the board is busy (or leaves the queues for a
        leased claim); a job trashed instead of claimed sends us looking further."""
        if claim is None:
            return self._then_claim_next(finished, who, wanted, lease)
        self._took(wanted, length)
        return ConsumedNext(finished, claim)
