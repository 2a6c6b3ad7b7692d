"""In-process job board (``memory://NAME``).

Honours the whole board contract — exclusive claims, leases, fencing tokens,
progress, cancel, retention — so engine and conductor tests need no server.
Boards opened with the same NAME in one process share one store. Board time
comes from an injectable ``clock`` so tests can expire leases without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Self
from urllib.parse import urlsplit

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.changes import Ending, NewJob, Release
from jobboard.model import FINISHED_STATES, BoardEvent, Claim, Entity, Job, JobRef, JobState
from jobboard.urls import coerce_options, parse_options

__all__ = ["MemoryBoard"]


class _Store:
    """The shared state of every MemoryBoard of one name, and the operations on
    its indexes; every method expects ``lock`` to be held."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.jobs: dict[str, Job] = {}
        self.progress: dict[str, dict[str, str]] = {}
        self.waiting: dict[str, list[tuple[int, int, str]]] = {}  # flow -> heap
        self.leases: list[tuple[float, str, int]] = []  # heap of (expires_at, job, token)
        self.finished: deque[tuple[float, str]] = deque()
        self.entities: dict[tuple[str, str], Entity] = {}
        self.counters: dict[str, int] = {}
        self.pauses: dict[str, str] = {}
        self.seq = itertools.count(1)
        self.subscribers: list[Callable[[BoardEvent], None]] = []
        self.keys: dict[str, str] = {}  # dedupe key -> job id
        self.scheduled: list[tuple[float, int, str]] = []  # heap of (due, seq, job id)
        self.children: dict[str, set[str]] = {}  # parent id -> child ids
        self.schedules: dict[str, tuple[str, int]] = {}  # name -> (record JSON, version)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def push_waiting(self, job: Job) -> None:
        heapq.heappush(self.waiting.setdefault(job.flow, []), (job.priority.rank, job.seq, job.id))

    def add(self, job: Job) -> None:
        """Store a new job and index it: waiting or scheduled, key, parent."""
        self.jobs[job.id] = job
        if job.state is JobState.SCHEDULED:
            assert job.not_before is not None
            heapq.heappush(self.scheduled, (job.not_before, job.seq, job.id))
        else:
            self.push_waiting(job)
        if job.key is not None:
            self.keys[job.key] = job.id
        if job.parent is not None:
            self.children.setdefault(job.parent, set()).add(job.id)

    def keyed(self, key: str | None) -> Job | None:
        """The job holding a dedupe key, if any."""
        job_id = None if key is None else self.keys.get(key)
        return None if job_id is None else self.jobs.get(job_id)

    def forget(self, job_id: str) -> None:
        """Delete a job with its progress, freeing its key and leaving its parent's index."""
        job = self.jobs.pop(job_id, None)
        self.progress.pop(job_id, None)
        if job is None:
            return
        if job.key is not None and self.keys.get(job.key) == job_id:
            del self.keys[job.key]
        siblings = self.children.get(job.parent or "")
        if siblings is not None:
            siblings.discard(job_id)
            if not siblings:
                del self.children[job.parent or ""]

    def promote(self, now: float) -> None:
        """Make scheduled jobs whose due time came waiting (heap order: cheapest first)."""
        while self.scheduled and self.scheduled[0][0] <= now:
            _, seq, job_id = heapq.heappop(self.scheduled)
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.SCHEDULED or job.seq != seq:
                continue
            self.jobs[job_id] = replace(job, state=JobState.WAITING, updated_at=now)
            self.push_waiting(job)
            self.changed.notify_all()

    def next_due(self) -> float | None:
        """The due time of the earliest scheduled job (stale heap entries dropped)."""
        while self.scheduled:
            _, seq, job_id = self.scheduled[0]
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.SCHEDULED and job.seq == seq:
                return self.scheduled[0][0]
            heapq.heappop(self.scheduled)
        return None

    def finish(self, job: Job, now: float) -> None:
        """Store a job that finished at ``now`` (retention starts counting)."""
        self.jobs[job.id] = job
        self.finished.append((now, job.id))

    def reap(self, now: float, retention: float, events: list[BoardEvent]) -> None:
        """Turn claims whose lease ran out back into waiting jobs, promote due
        scheduled jobs; purge old finished jobs."""
        self.promote(now)
        while self.leases and self.leases[0][0] <= now:
            _, job_id, token = heapq.heappop(self.leases)
            job = self.jobs.get(job_id)
            if job is None or job.state is not JobState.CLAIMED or job.token != token:
                continue
            if job.lease_expires_at is not None and job.lease_expires_at > now:
                heapq.heappush(self.leases, (job.lease_expires_at, job_id, token))
                continue
            self.jobs[job_id] = replace(
                job,
                state=JobState.WAITING,
                owner=None,
                claimed_at=None,
                lease_expires_at=None,
                updated_at=now,
                last_error=f"lease of {job.owner} expired",
            )
            self.push_waiting(job)
            self.count("expired")
            events.append(BoardEvent("expired", job_id, {"token": token, "owner": job.owner}))
            self.changed.notify_all()
        while self.finished and self.finished[0][0] + retention <= now:
            _, job_id = self.finished.popleft()
            job = self.jobs.get(job_id)
            if (
                job is not None
                and job.state in FINISHED_STATES
                and (job.finished_at or 0) + retention <= now
            ):
                self.forget(job_id)

    def best_waiting(self, flows: Collection[str] | None) -> Job | None:
        """Pop stale heap entries and return the best waiting job."""
        best: tuple[tuple[int, int, str], list[tuple[int, int, str]]] | None = None
        names = self.waiting.keys() if flows is None else flows
        for flow in list(names):
            heap = self.waiting.get(flow)
            while heap:
                rank, seq, job_id = heap[0]
                job = self.jobs.get(job_id)
                if job is not None and job.state is JobState.WAITING and job.seq == seq:
                    break
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = (heap[0], heap)
        if best is None:
            return None
        heapq.heappop(best[1])
        return self.jobs[best[0][2]]

    def has_waiting(self, flows: Collection[str] | None) -> bool:
        names = self.waiting.keys() if flows is None else flows
        for flow in names:
            for _, seq, job_id in self.waiting.get(flow, ()):
                job = self.jobs.get(job_id)
                if job is not None and job.state is JobState.WAITING and job.seq == seq:
                    return True
        return False


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryBoard(JobBoard):
    """A thread-safe in-memory board; ``clock`` supplies board time (default ``time.time``)."""

    scheme = "memory"

    def __init__(
        self, name: str = "default", *, clock: Callable[[], float] | None = None, **options: Any
    ) -> None:
        self._clock = clock or time.time
        if clock is not None:
            options.setdefault("local_clock", clock)
        super().__init__(name, **options)
        with _STORES_LOCK:
            self._s = _STORES.setdefault(self.namespace, _Store())
        self._connected = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``memory://NAME?lease=5&...``."""
        parts = urlsplit(url)
        name = (parts.netloc + parts.path).strip("/") or "default"
        opts = coerce_options({**parse_options(url), **options}, url)
        return cls(name, **opts)

    @classmethod
    def reset(cls, name: str) -> None:
        """Forget every job of a named in-memory store (tests)."""
        with _STORES_LOCK:
            _STORES.pop(name, None)

    def connect(self) -> Self:
        with self._s.lock:
            if not self._connected:
                self._s.subscribers.append(self._emit)
                self._connected = True
        return self

    def close(self) -> None:
        with self._s.lock:
            if self._connected:
                self._s.subscribers.remove(self._emit)
                self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    # -- internals ----------------------------------------------------------

    def _publish(self, events: list[BoardEvent]) -> None:
        for event in events:
            for subscriber in list(self._s.subscribers):
                subscriber(event)

    @contextmanager
    def _changing(self) -> Iterator[tuple[float, list[BoardEvent]]]:
        """Hold the store's lock at board time ``now``, expired leases reaped;
        publish the events gathered meanwhile once the lock is released."""
        events: list[BoardEvent] = []
        try:
            with self._s.lock:
                now = self._clock()
                self._s.reap(now, self.retention, events)
                yield now, events
        finally:
            self._publish(events)

    def _require(self, job_id: str) -> Job:
        job = self._s.jobs.get(job_id)
        if job is None:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        return job

    def _fenced(self, job_id: str, who: str, token: int | None, force: bool) -> Job:
        """Return the job if ``who``/``token`` own it (or ``force``); raise otherwise."""
        job = self._require(job_id)
        self._check_fence(job_id, job.state, job.token, job.owner, who, token, force)
        return job

    def _finish(self, end: Ending) -> Job:
        with self._changing() as (now, events):
            job = self._fenced(end.job_id, end.who, end.token, end.force)
            done = end.apply(job, now)
            self._s.finish(done, now)
            self._s.count(end.event)
            events.append(end.published(job.token, job.flow))
            self._untrack(end.job_id)
        return done

    # -- producers ----------------------------------------------------------

    def _post(self, new: NewJob) -> Job:
        with self._changing() as (now, events):
            existing = self._s.keyed(new.key)
            if existing is not None:
                return existing
            job = new.job(uuid.uuid4().hex, now, next(self._s.seq))
            self._s.add(job)
            self._s.count("posted")
            self._s.changed.notify_all()
            events.append(new.event(job.id, job.not_before))
        return job

    def _children(
        self, parent_id: str, wanted: frozenset[JobState], flow: str | None
    ) -> list[Job]:
        with self._changing():
            found = [self._s.jobs[i] for i in self._s.children.get(parent_id, ())]
        jobs = [j for j in found if j.state in wanted and (flow is None or j.flow == flow)]
        return sorted(jobs, key=lambda j: (j.priority.rank, j.seq))

    def get(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        with self._changing():
            return self._require(job_id)

    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        with self._changing():
            jobs = [
                j
                for j in self._s.jobs.values()
                if j.state in wanted and (flow is None or j.flow == flow)
            ]
        jobs.sort(key=lambda j: (j.priority.rank, j.seq))
        return jobs

    def cancel(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        with self._changing() as (now, events):
            current = self._require(job_id)
            if current.state.finished:
                raise errors.InvalidState(
                    f"job {errors.shown(job_id)} is already {current.state.value}; nothing to cancel"
                )
            if current.state in (JobState.WAITING, JobState.SCHEDULED):
                updated = replace(
                    current,
                    state=JobState.CANCELLED,
                    updated_at=now,
                    finished_at=now,
                    cancel_requested=True,
                    last_error="cancelled before it started",
                )
                self._s.finish(updated, now)
                self._s.count("cancelled")
                events.append(BoardEvent("cancelled", job_id, {"token": current.token}))
            else:
                updated = replace(current, cancel_requested=True, updated_at=now)
                self._s.jobs[job_id] = updated
                events.append(BoardEvent("cancel_requested", job_id, {"token": current.token}))
        return updated

    # -- conductors ---------------------------------------------------------

    def _claim_locked(
        self, job: Job, who: str, lease: float, now: float, started: float, events: list[BoardEvent]
    ) -> Claim | None:
        """Claim a waiting job (lock held); trash it instead if it is poison."""
        if job.attempts >= job.max_attempts:
            reason = self._poison_reason(job.attempts, job.max_attempts)
            trashed = replace(
                job, state=JobState.TRASHED, updated_at=now, finished_at=now, last_error=reason
            )
            self._s.finish(trashed, now)
            self._s.count("trashed")
            self._s.count("poison")
            events.append(BoardEvent("trashed", job.id, {"reason": reason, "forced": True}))
            return None
        token = job.token + 1
        claimed = replace(
            job,
            state=JobState.CLAIMED,
            owner=who,
            token=token,
            claimed_at=now,
            lease_expires_at=now + lease,
            attempts=job.attempts + 1,
            updated_at=now,
        )
        self._s.jobs[job.id] = claimed
        heapq.heappush(self._s.leases, (now + lease, job.id, token))
        self._s.count("claimed")
        events.append(BoardEvent("claimed", job.id, {"token": token, "owner": who}))
        return self._track(
            Claim(
                job_id=job.id,
                owner=who,
                token=token,
                lease=lease,
                expires_at=now + lease,
                deadline=started + lease,
                job=claimed,
            )
        )

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._job_id(job)
        length = self._claim_args(job_id, who, lease)
        started = self._local_clock()
        with self._changing() as (now, events):
            current = self._require(job_id)
            if current.state is not JobState.WAITING:
                owner = f" by {current.owner!r}" if current.owner else ""
                raise errors.UnclaimableJob(
                    f"job {errors.shown(job_id)} is {current.state.value}{owner}; it cannot be claimed"
                )
            claim = self._claim_locked(current, who, length, now, started, events)
            if claim is None:
                raise errors.UnclaimableJob(
                    f"job {errors.shown(job_id)} was trashed: {self._s.jobs[job_id].last_error}"
                )
            return claim

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        length = self._claim_args("?", who, lease)
        started = self._local_clock()
        with self._changing() as (now, events):
            while True:
                best = self._s.best_waiting(flows)
                if best is None:
                    return None
                claim = self._claim_locked(best, who, length, now, started, events)
                if claim is not None:
                    return claim

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        length = self._lease_for(lease)
        started = self._local_clock()
        out: dict[str, Claim | None] = {}
        with self._changing() as (now, _events):
            for claim in claims:
                job = self._s.jobs.get(claim.job_id)
                if (
                    job is None
                    or job.state is not JobState.CLAIMED
                    or job.token != claim.token
                    or job.owner != claim.owner
                ):
                    out[claim.job_id] = None
                    continue
                self._s.jobs[job.id] = replace(job, lease_expires_at=now + length)
                heapq.heappush(self._s.leases, (now + length, job.id, job.token))
                if job.cancel_requested:
                    self._mark_cancel(job.id)
                out[claim.job_id] = replace(
                    claim, lease=length, expires_at=now + length, deadline=started + length
                )
        self._apply_renewals(out)
        return out

    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        with self._changing():
            self._fenced(job_id, who, token, False)
            self._s.progress.setdefault(job_id, {})[atom_name] = encoded

    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._job_id(job)
        with self._s.lock:
            self._require(job_id)
            records = dict(self._s.progress.get(job_id, {}))
        return {name: json.loads(text) for name, text in records.items()}

    def _release_claim(self, release: Release) -> Job:
        job_id = release.job_id
        with self._changing() as (now, events):
            current = self._fenced(job_id, release.who, release.token, release.force)
            if current.state is not JobState.CLAIMED:
                raise errors.InvalidState(f"job {errors.shown(job_id)} is not claimed; nothing to abandon")
            released = release.apply(current, now)
            self._s.jobs[job_id] = released
            self._s.push_waiting(released)
            self._s.count("abandoned")
            self._s.changed.notify_all()
            events.append(release.published(current.token, current.flow))
            self._untrack(job_id)
        return released

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        events: list[BoardEvent] = []
        try:
            with self._s.changed:
                while True:
                    self._s.reap(self._clock(), self.retention, events)
                    if self._s.has_waiting(flows):
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    # Bounded so that leases expiring on the injected clock are noticed,
                    # and never past the next due time of a scheduled job.
                    pause = 0.5 if remaining is None else min(remaining, 0.5)
                    due = self._s.next_due()
                    if due is not None:
                        pause = max(0.0, min(pause, due - self._clock()))
                    self._s.changed.wait(pause)
        finally:
            self._publish(events)

    # -- flow pauses --------------------------------------------------------

    def _read_pauses(self) -> dict[str, str]:
        with self._s.lock:
            return dict(self._s.pauses)

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        with self._s.lock:
            if encoded is None:
                return self._s.pauses.pop(flow, None) is not None
            was = flow in self._s.pauses
            self._s.pauses[flow] = encoded
            return was

    # -- entities -----------------------------------------------------------

    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        encoded = self._encode(dict(metadata or {}), "metadata", name)
        with self._s.lock:
            self._s.entities[(kind, name)] = Entity(name, kind, json.loads(encoded), self._clock())

    def unregister_entity(self, name: str, kind: str = "conductor") -> None:
        with self._s.lock:
            self._s.entities.pop((kind, name), None)

    def iter_entities(self, kind: str = "conductor") -> list[Entity]:
        horizon = self._clock() - self.DEFAULT_ENTITY_TTL
        with self._s.lock:
            return sorted(
                (
                    e
                    for (k, _), e in self._s.entities.items()
                    if k == kind and e.last_seen >= horizon
                ),
                key=lambda e: e.name,
            )

    # -- operators ----------------------------------------------------------

    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        with self._s.lock:
            horizon = self._clock() - older_than
            doomed = [
                j.id
                for j in self._s.jobs.values()
                if j.state in wanted and (j.finished_at or 0) <= horizon
            ]
            for job_id in doomed:
                self._s.forget(job_id)
            self._s.count("purged", len(doomed))
        if doomed:
            self._publish([BoardEvent("purged", None, {"count": len(doomed)})])
        return len(doomed)

    def counters(self) -> dict[str, int]:
        with self._s.lock:
            return dict(self._s.counters)

    # -- the record store ----------------------------------------------------

    def _put_schedule(self, name: str, encoded: str, expect_version: int | None) -> int:
        with self._s.lock:
            current = self._s.schedules.get(name)
            version = None if current is None else current[1]
            if version != expect_version:
                raise self._conflict(name, expect_version, version)
            new_version = (version or 0) + 1
            self._s.schedules[name] = (encoded, new_version)
        return new_version

    def _get_schedules(self) -> dict[str, tuple[str, int]]:
        with self._s.lock:
            return dict(self._s.schedules)

    def _remove_schedule(self, name: str, expect_version: int | None) -> bool:
        with self._s.lock:
            current = self._s.schedules.get(name)
            if expect_version is not None and (current is None or current[1] != expect_version):
                raise self._conflict(name, expect_version, None if current is None else current[1])
            return self._s.schedules.pop(name, None) is not None
