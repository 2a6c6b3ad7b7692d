"""The job board contract: jobs, claims, fencing tokens and progress.

A *job board* holds jobs that producers post and conductors claim. Every
backend (memory, Redis, ZooKeeper, SQLite) implements :class:`JobBoard` with
the same guarantees:

1. **At most one live claim per job.** ``claim`` either makes the caller the
   sole owner or raises :class:`~jobboard.errors.UnclaimableJob` and changes
   nothing.
2. **Fencing tokens.** Every claim carries a token strictly greater than every
   earlier token of that job. Fenced writes (``save_progress``, ``consume``,
   ``fail``, ``abandon``, ``trash``) name the token and are checked inside the
   backend atomically with the write; a stale token changes nothing and raises
   :class:`~jobboard.errors.StaleToken` (or ``NotOwner`` when nobody holds it).
3. **Claims end by themselves.** A claim is a lease (Redis, SQLite, memory)
   renewed by its owner with :meth:`JobBoard.renew`, or bound to the owner's
   session (ZooKeeper). An expired lease is the same as no claim: the job is
   claimable again and the old owner's writes are rejected.
4. **Nothing is lost.** A job is waiting, claimed, or finished (complete,
   failed, trashed or cancelled, with its result or reason) until retention
   removes a finished job.
5. **Only JSON crosses the board.** Stores, results, errors and progress
   records are JSON, size-limited, validated at the door with errors naming
   the field and the job.

Producers (see :mod:`jobboard.producers` for the parts written once):

6. **Posting once.** ``post(..., key=K)``: a dedupe key is unique per namespace
   while its job exists (unfinished, or finished and kept by retention;
   purging the job frees it). A post naming a key in use returns the existing
   job and changes nothing, atomically: racing producers get one job, and a
   producer may resend a post whose outcome it does not know.
7. **Posting for later.** ``post(..., delay=S)`` or ``not_before=T`` (board
   time): the job is ``scheduled`` (unfinished, listed with its
   ``not_before``) and becomes claimable at its due time, then in priority
   order among waiting jobs. A due scheduled job reads as waiting, exactly as
   a lapsed lease reads as waiting; backends promote due jobs in bounded
   batches inside claims, so a claim's cost stays logarithmic in the backlog.
   ``wait`` sleeps no longer than until the next due time it knows of.
8. **Results.** ``wait_for(job, timeout)`` returns the finished job, woken by
   a push, or raises ``WaitTimeout``.
9. **Children.** ``post(..., parent=P)`` records ``Job.parent``;
   ``children(P)`` / ``iterjobs(parent=P)`` list them.
10. **Records.** ``put_schedule`` / ``get_schedules`` / ``remove_schedule``
    keep named JSON records with compare-and-set versions, atomically.

Who may do what:

* anyone may ``post``, ``get``, ``iterjobs``, ``find_owner``, ``cancel``,
  ``wait_for``, ``children`` and ``load_progress``; a scheduled job is
  cancelled at once, like a waiting one;
* anyone may read and compare-and-set the records of ``put_schedule``;
* the owner (``who`` and the current ``token``) may ``renew``,
  ``save_progress``, ``consume``, ``fail``, ``abandon`` and ``trash``;
* an operator may ``abandon`` or ``trash`` any unfinished job with
  ``force=True`` (the old owner's token stays stale forever after), end one
  as cancelled at once with ``force_cancel``, and
  ``purge`` finished jobs, and ``pause_flow`` / ``resume_flow`` (conductors
  claim no job of a paused flow; ``paused_flows`` is for anyone).

Owners are opaque strings; use :func:`unique_owner` so that two processes
never share one (the token check protects even if they do).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self

from jobboard import errors
from jobboard.changes import Ending, NewJob, Release
from jobboard.finishing import Finishing
from jobboard.model import (
    ACTIVE_STATES,
    FINISHED_STATES,
    BoardEvent,
    Claim,
    ClaimStatus,
    Entity,
    Job,
    JobPriority,
    JobRef,
    JobState,
    Versioned,
    unique_owner,
)
from jobboard.pauses import FlowPauses
from jobboard.producers import Producing
from jobboard.urls import coerce_options, redact_url

# The model's names stay importable from here, where they were first defined.
__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "BoardEvent",
    "Claim",
    "ClaimStatus",
    "Entity",
    "Job",
    "JobBoard",
    "JobPriority",
    "JobRef",
    "JobState",
    "Versioned",
    "coerce_options",
    "redact_url",
    "unique_owner",
]


class JobBoard(Producing, FlowPauses, Finishing, abc.ABC):
    """Abstract job board. Subclasses implement one backend.

    Tunables are class constants, overridable per instance through the
    constructor (and through the URL's query string in :func:`jobboard.connect`).
    The local view of claims and the listeners come from
    :class:`~jobboard.claimview.LocalClaims`, the argument checks and the
    fencing rule from :class:`~jobboard.checks.BoardChecks`, waiting for
    results, children and the record store from
    :class:`~jobboard.producers.Producing`.
    """

    scheme: ClassVar[str] = ""
    #: Default claim lease in seconds (ignored by session-bound backends).
    DEFAULT_LEASE: ClassVar[float] = 5.0
    #: How long finished jobs (and their progress) are kept, in seconds.
    DEFAULT_RETENTION: ClassVar[float] = 7 * 86400.0
    #: Largest encoded JSON payload accepted for a store, result or progress record.
    DEFAULT_MAX_PAYLOAD: ClassVar[int] = 1 << 20
    #: How many claims a job gets before it is trashed as a poison job.
    DEFAULT_MAX_ATTEMPTS: ClassVar[int] = 5
    #: Entities not heard from in this many seconds are considered gone.
    DEFAULT_ENTITY_TTL: ClassVar[float] = 30.0

    def __init__(
        self,
        name: str = "default",
        *,
        namespace: str | None = None,
        lease: float | None = None,
        retention: float | None = None,
        max_payload: int | None = None,
        max_attempts: int | None = None,
        local_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.namespace = namespace or name
        self.lease = float(lease if lease is not None else self.DEFAULT_LEASE)
        self.retention = float(retention if retention is not None else self.DEFAULT_RETENTION)
        self.max_payload = int(max_payload if max_payload is not None else self.DEFAULT_MAX_PAYLOAD)
        self.max_attempts = int(
            max_attempts if max_attempts is not None else self.DEFAULT_MAX_ATTEMPTS
        )
        if self.lease <= 0:
            raise errors.BadURL(f"board {name!r}: option 'lease' must be > 0, got {lease!r}")
        Producing.__init__(self, local_clock)

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build an unconnected board from a URL of this backend's scheme."""
        raise errors.BadURL(f"{cls.__name__} cannot be opened from a URL")

    @abc.abstractmethod
    def connect(self) -> Self:
        """Open connections (idempotent) and return self."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections this board opened (never a client it was given)."""

    @property
    def connected(self) -> bool:
        """True while the backend connection is believed to be usable."""
        return True

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} namespace={self.namespace!r}>"

    # -- producers ----------------------------------------------------------

    def post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        max_attempts: int | None = None,
        details: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        not_before: float | None = None,
        parent: JobRef | None = None,
    ) -> Job:
        """Add a waiting job and wake waiting conductors. Atomic.

        ``key`` makes the post idempotent: while a job posted with that key
        exists, posting it again returns that job and changes nothing.
        ``delay`` (seconds from now, board time) or ``not_before`` (board time,
        epoch seconds) post it for later: it is ``scheduled`` until then.
        ``parent`` records the job (or id) that posts it as ``Job.parent``.
        Raises ``InvalidJob`` naming the field when anything is malformed;
        nothing is written then.
        """
        new = self._validate_post(name, flow, store, priority, max_attempts, details)
        if key is not None or delay is not None or not_before is not None or parent is not None:
            new = self._validate_producing(new, key, delay, not_before, parent)
        return self._post(new)

    @abc.abstractmethod
    def get(self, job: JobRef) -> Job:
        """Read one job (any state); raises ``JobNotFound``."""

    def iterjobs(
        self,
        only_unclaimed: bool = False,
        ensure_fresh: bool = False,
        *,
        states: Collection[JobState | str] | None = None,
        flow: str | None = None,
        parent: JobRef | None = None,
    ) -> Iterator[Job]:
        """Jobs in claim order (priority, then post order).

        By default only unfinished jobs (waiting, scheduled and claimed);
        ``states`` selects others. ``only_unclaimed`` restricts to waiting
        jobs. A claim whose lease ran out, and a scheduled job whose due time
        passed, are reported as waiting. ``ensure_fresh`` asks a backend that
        lists from a local cache to read the server instead. ``parent`` lists
        only that job's children (from an index per parent where the backend
        keeps one).
        """
        wanted = self._normalise_states(states, only_unclaimed)
        if parent is not None:
            return iter(self._children(self._job_id(parent), wanted, flow))
        return iter(self._list_jobs(wanted, flow, ensure_fresh))

    @property
    def job_count(self) -> int:
        """Number of unfinished (waiting, scheduled or claimed) jobs."""
        return sum(1 for _ in self.iterjobs())

    @abc.abstractmethod
    def cancel(self, job: JobRef) -> Job:
        """Cancel a job: a waiting (or scheduled) job ends cancelled at once; a claimed job is
        flagged (and the flag published) so its owner stops it and ends it
        cancelled. Raises ``InvalidState`` for a finished job."""

    # -- conductors ---------------------------------------------------------

    @abc.abstractmethod
    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        """Claim one waiting job. Atomic; raises ``UnclaimableJob`` otherwise.

        Each claim counts an attempt; a job whose attempts already reached its
        ``max_attempts`` is trashed as a poison job instead (and
        ``UnclaimableJob`` raised).
        """

    @abc.abstractmethod
    def claim_next(
        self,
        who: str,
        flows: Collection[str] | None = None,
        *,
        lease: float | None = None,
    ) -> Claim | None:
        """Claim the best waiting job whose flow is in ``flows`` (any flow when
        ``None``), or return ``None`` when there is none. Never scans the whole
        board: cost grows with the log of the backlog at most."""

    @abc.abstractmethod
    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        """Extend the leases of the caller's claims, all in one round trip where
        the backend allows. Returns ``{job_id: renewed claim or None if lost}``;
        lost claims are also marked lost locally."""

    def save_progress(
        self, job: JobRef, who: str, token: int, atom_name: str, record: Mapping[str, Any]
    ) -> None:
        """Store one task's JSON progress record, fenced by ``token``."""
        job_id = self._job_id(job)
        encoded = self._validate_atom(job_id, atom_name, record)
        self._check_owner_args(job_id, who, token, False)
        self._store_progress(job_id, who, token, atom_name, encoded)

    @abc.abstractmethod
    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        """Every progress record of the job, keyed by atom name."""

    def consume(
        self,
        job: JobRef,
        who: str,
        token: int,
        *,
        result: Any = None,
        progress: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        """Finish an owned job as complete with its JSON ``result``. Fenced.

        ``progress`` (``{atom_name: record}``) stores the last progress records
        as ``save_progress`` would, under the same fence: in the finishing write
        itself where the backend can (one transaction on ZooKeeper), else saved
        just before it. A conductor passes the last task's record here.
        """
        job_id = self._job_id(job)
        result_json = None if result is None else self._encode(result, "result", job_id)
        records = {
            name: self._validate_atom(job_id, name, record)
            for name, record in (progress or {}).items()
        }
        self._check_owner_args(job_id, who, token, False)
        end = Ending(job_id, who, token, JobState.COMPLETE, False, result_json, None, "consumed")
        return self._fenced_end(end, records)

    def fail(
        self, job: JobRef, who: str, token: int, *, error: str, cancelled: bool = False
    ) -> Job:
        """Finish an owned job as failed (or cancelled) with ``error``. Fenced."""
        job_id = self._job_id(job)
        message = self._validate_error(job_id, error)
        self._check_owner_args(job_id, who, token, False)
        state, event = (JobState.CANCELLED, "cancelled") if cancelled else (JobState.FAILED, "failed")
        return self._fenced_end(Ending(job_id, who, token, state, False, None, message, event))

    def abandon(
        self,
        job: JobRef,
        who: str,
        token: int | None = None,
        *,
        reason: str | None = None,
        force: bool = False,
        refund: bool = False,
    ) -> Job:
        """Give a claimed job back (waiting again at once). Fenced unless ``force``.

        ``refund`` gives back the attempt the claim counted, for a release that
        is not the job's fault (a conductor shutting down), so that restarts
        never turn a healthy job into a poison job.
        """
        job_id = self._job_id(job)
        message = None if reason is None else self._validate_error(job_id, reason, "reason")
        self._check_owner_args(job_id, who, token, force)
        release = Release(job_id, who, token, message, force, bool(refund))
        try:
            return self._release_claim(release)
        except (errors.NotOwner, errors.InvalidState):
            if not force:
                self._forget_refused(job_id, who, token)
            raise

    def trash(
        self,
        job: JobRef,
        who: str,
        token: int | None = None,
        *,
        reason: str | None = None,
        force: bool = False,
    ) -> Job:
        """Finish an owned job as trashed (never run again). Fenced unless ``force``,
        with which an operator may trash any unfinished job."""
        job_id = self._job_id(job)
        message = self._validate_error(job_id, reason or "trashed", "reason")
        self._check_owner_args(job_id, who, token, force)
        return self._fenced_end(
            Ending(job_id, who, token, JobState.TRASHED, force, None, message, "trashed")
        )

    def _fenced_end(self, end: Ending, progress: Mapping[str, str] | None = None) -> Job:
        """:meth:`_finish` (with the last ``progress`` records, if any); a refusal
        (``NotOwner``, ``StaleToken``, or ``InvalidState`` for a job that already
        ended) also forgets the local claim it names, which the board just said
        is not ours."""
        try:
            if progress:
                return self._finish_with_progress(end, progress)
            return self._finish(end)
        except (errors.NotOwner, errors.InvalidState):
            if not end.force:
                self._forget_refused(end.job_id, end.who, end.token)
            raise

    def force_cancel(self, job: JobRef, who: str, *, reason: str | None = None) -> Job:
        """Operator: end any unfinished job as cancelled at once, with ``reason``.

        Unfenced like ``trash(force=True)``: a claimed job's owner loses it (its
        token is stale from now on, so its next fenced write fails and its
        claim check stops the job), and the job never runs again.
        """
        job_id = self._job_id(job)
        message = self._validate_error(job_id, reason or "cancelled", "reason")
        self._check_owner_args(job_id, who, None, True)
        return self._finish(
            Ending(job_id, who, None, JobState.CANCELLED, True, None, message, "cancelled")
        )

    def find_owner(self, job: JobRef) -> str | None:
        """The owner of the job's live claim, or ``None``."""
        return self.get(job).owner

    @abc.abstractmethod
    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a waiting job (of ``flows``) may be available; True if so,
        False on timeout. Woken by posts, not by busy polling; never sleeps past
        the next due time of a scheduled job it knows of. With several idle
        waiters a backend may wake only one of them per job (then ``claim_next``
        of one queued behind another returns None), as long as a waiter that can
        claim the job wakes."""

    #: Whether :meth:`interrupt_wait` ends a blocked :meth:`wait` at once (so a
    #: caller may block for long instead of waking now and then to look at a flag).
    WAIT_INTERRUPTIBLE: ClassVar[bool] = False

    def interrupt_wait(self) -> None:
        """Make this process's threads blocked in :meth:`wait` return (False) soon;
        a no-op on boards whose ``wait`` is not interruptible."""

    # -- entities -----------------------------------------------------------

    @abc.abstractmethod
    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Announce (or refresh) a participant; it is listed until it unregisters
        or ``DEFAULT_ENTITY_TTL`` passes without a refresh."""

    @abc.abstractmethod
    def unregister_entity(self, name: str, kind: str = "conductor") -> None:
        """Remove a participant's announcement."""

    @abc.abstractmethod
    def iter_entities(self, kind: str = "conductor") -> list[Entity]:
        """Live participants of a kind."""

    # -- operators ----------------------------------------------------------

    def purge(
        self, states: Collection[JobState | str] = FINISHED_STATES, older_than: float = 0.0
    ) -> int:
        """Delete finished jobs in ``states`` finished more than ``older_than``
        seconds ago; returns how many. Unfinished jobs are never purged."""
        wanted = self._normalise_states(states, False)
        if not wanted <= FINISHED_STATES:
            raise errors.InvalidState(
                "only finished jobs (complete, failed, trashed, cancelled) can be purged"
            )
        return self._purge(wanted, older_than)

    def counters(self) -> dict[str, int]:
        """Board-wide event counters (claims, expired leases, trashed, poison...)."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Counts per state and per flow, the oldest waiting job's age, counters."""
        per_state = {s.value: 0 for s in JobState}
        per_flow: dict[str, dict[str, int]] = {}
        oldest: float | None = None
        now = time.time()
        for job in self.iterjobs(states=list(JobState)):
            per_state[job.state.value] += 1
            flow_counts = per_flow.setdefault(job.flow, {})
            flow_counts[job.state.value] = flow_counts.get(job.state.value, 0) + 1
            if job.state is JobState.WAITING:
                age = now - job.created_at
                oldest = age if oldest is None else max(oldest, age)
        return {
            "states": per_state,
            "flows": per_flow,
            "oldest_waiting_age": oldest,
            "counters": self.counters(),
        }

    # -- the atomic part of writes, one per backend --------------------------
    #
    # The public methods have validated every argument (``who`` and ``token``
    # too) before they call a hook; a hook checks the fence and writes, atomically.

    @abc.abstractmethod
    def _post(self, new: NewJob) -> Job:
        """Add the validated job as waiting (or scheduled), count and publish
        ``posted``; return it. When ``new.key`` names an existing job, return
        that job instead and change nothing (atomically with the check)."""

    @abc.abstractmethod
    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        """The jobs in ``wanted`` states (of ``flow`` if given), in claim order."""

    @abc.abstractmethod
    def _release_claim(self, release: Release) -> Job:
        """Make a claimed job waiting again as ``release`` says, fenced unless
        ``release.force``. Publishes ``abandoned`` and forgets the claim."""

    @abc.abstractmethod
    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        """Delete the finished jobs in ``wanted`` states older than ``older_than``
        seconds; count and publish ``purged`` when any went; return how many."""

