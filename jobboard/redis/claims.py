"""Claims of the Redis board: claiming one job, the best waiting job, renewing.

Each claim is one script: it reaps a batch of expired leases, checks the job
is waiting, trashes it instead when its attempts are used up (a poison job),
bumps the token and sets the lease, all atomically. ``renew`` extends every
held lease in one call. ``consume_and_claim_next`` sends the finishing write
and the claim of the next job as one script (``consume_next.lua``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from jobboard import errors
from jobboard.changes import Ending
from jobboard.finishing import ConsumedNext
from jobboard.model import Claim, JobRef
from jobboard.redis.decoding import decode_job, pairs, readable_job, text
from jobboard.redis.idle import flow_key
from jobboard.redis.session import log
from jobboard.redis.writes import RedisWrites

__all__ = ["RedisClaims"]


class RedisClaims(RedisWrites):
    """Claiming and renewing."""

    #: Most expired leases one claim call ends (the reaper step's batch).
    REAP_BATCH: ClassVar[int] = 100
    #: Most poison jobs one claim_next script trashes before it is called again.
    SKIP_LIMIT: ClassVar[int] = 32

    def _claimed(self, raw: list[Any], who: str, length: float, started: float) -> Claim:
        """Track the claim a script returned; a job whose record cannot be read
        is trashed at once (it could never run) and ``InvalidJob`` raised."""
        job_id, fields = text(raw[0]), pairs(raw[1:])
        try:
            job = decode_job(job_id, fields)
        except errors.InvalidJob as err:
            self.trash(job_id, who, int(fields["token"]), reason=f"corrupt job record: {err}")
            raise
        claim = self._track(
            Claim(
                job_id=job.id,
                owner=who,
                token=job.token,
                lease=length,
                expires_at=job.lease_expires_at,
                deadline=started + length,
                job=job,
            )
        )
        if job.cancel_requested:
            self._mark_cancel(job.id)
        # Our own claim publishes no event to our channel (``emit`` in lua/_lib.lua):
        # what the "claimed" event would have told idle waiters is told here.
        self._idle.claimed(job.lease_expires_at, job.id)
        self._wake(None, changed=False)
        return claim

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._job_id(job)
        length = self._claim_args(job_id, who, lease)
        started = self._local_clock()
        raw = self._call(
            "claim",
            job_id,
            lambda: self._script(
                "claim",
                self._job_key(job_id),
                job_id,
                who,
                repr(length),
                repr(self.retention),
                self.REAP_BATCH,
            ),
            safe=False,
        )
        return self._claimed(raw, who, length, started)

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        asked = self._claim_next_args(who, flows, lease)
        if asked is None:
            return None
        flows, length, args = asked
        while True:
            started = self._local_clock()
            mark = self._idle.mark()
            raw = self._call(
                "claim_next",
                None,
                lambda: self._script("claim_next", f"{self._prefix}leases", *args),
                safe=False,
            )
            done, claim = self._next_claimed(raw, who, flows, length, started, mark)
            if done:
                return claim

    def _claim_next_args(
        self, who: str, flows: Collection[str] | None, lease: float | None
    ) -> tuple[Collection[str] | None, float, tuple[Any, ...]] | None:
        """The checked flows, lease and script arguments (but the prefix) of a
        ``claim_next``; None when no flow is asked for."""
        length = self._claim_args("?", who, lease)
        if isinstance(flows, str):
            flows = [flows]
        if flows is not None and not flows:
            return None
        pass_on, self._pass_on = self._pass_on, False
        which = ["*"] if flows is None else ["=+" if pass_on else "=", *flows]
        return flows, length, (who, repr(length), repr(self.retention), self.REAP_BATCH,
                               self.SKIP_LIMIT, *which)

    def _next_claimed(
        self,
        raw: Any,
        who: str,
        flows: Collection[str] | None,
        length: float,
        started: float,
        mark: tuple[int, int, int],
    ) -> tuple[bool, Claim | None]:
        """Read a claim_next script's reply: (True, the claim or None when nothing
        waits), or (False, None) when the script must be called again (a run of
        poison jobs, or an unreadable job, was trashed)."""
        if raw is None:
            return True, None
        if isinstance(raw, bytes | str):
            word, *times = text(raw).split()
            if word != "idle":
                return False, None  # "again": a run of poison jobs was trashed; look further
            # Nothing waits: wait() needs not ask again until something happens.
            head = float(times[1]) if len(times) > 1 else None
            self._idle.quiet(flow_key(flows), mark, time.monotonic(), float(times[0]), head)
            return True, None
        try:
            return True, self._claimed(raw, who, length, started)
        except errors.InvalidJob:
            log.exception("redis board %r: trashed an unreadable job", self.namespace)
            return False, None

    def _finish_and_claim_next(
        self,
        end: Ending,
        progress: Mapping[str, str] | None,
        flows: Collection[str] | None,
        lease: float | None,
    ) -> ConsumedNext:
        """One script: the finishing write, then (only when it went through) the claim."""
        asked = self._claim_next_args(end.who, flows, lease)
        if asked is None:
            return ConsumedNext(self._fenced_end(end, progress), None)
        flows, length, claim_args = asked
        finish_args = self._finish_args(end, progress)
        started = self._local_clock()
        mark = self._idle.mark()
        try:
            raw = self._call(
                "consume",
                end.job_id,
                lambda: self._script(
                    "consume_next",
                    self._job_key(end.job_id),
                    len(finish_args),
                    *finish_args,
                    *claim_args,
                ),
                safe=False,
            )
        except errors.BoardError as err:
            self._pass_on = self._pass_on or claim_args[5] == "=+"  # not used: keep it
            if isinstance(err, errors.NotOwner | errors.InvalidState):
                self._forget_refused(end.job_id, end.who, end.token)
            raise
        self._ended_own(end)
        finished = readable_job(end.job_id, pairs(raw[0]))
        done, claim = self._next_claimed(raw[1], end.who, flows, length, started, mark)
        if done:
            return ConsumedNext(finished, claim)
        # Poison or unreadable jobs were trashed: look further, as claim_next does.
        return self._then_claim_next(finished, end.who, flows, lease)

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        length = self._lease_for(lease)
        claims = list(claims)
        if not claims:
            return {}
        args: list[Any] = [repr(length)]
        for claim in claims:
            args += [claim.job_id, claim.owner, claim.token]
        started = self._local_clock()
        reply = self._call(
            "renew",
            None,
            lambda: self._script("renew", f"{self._prefix}leases", *args),
            safe=True,  # extending a lease twice is the same as once
        )
        now = float(reply[0])
        out: dict[str, Claim | None] = {}
        for claim, status in zip(claims, reply[1:], strict=True):
            if not status:
                out[claim.job_id] = None
                continue
            if status == 2:
                self._mark_cancel(claim.job_id)
            out[claim.job_id] = replace(
                claim, lease=length, expires_at=now + length, deadline=started + length
            )
        self._apply_renewals(out)
        return out
