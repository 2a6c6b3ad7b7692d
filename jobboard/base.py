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

Who may do what:

* anyone may ``post``, ``get``, ``iterjobs``, ``find_owner``, ``cancel`` and
  ``load_progress``;
* the owner (``who`` and the current ``token``) may ``renew``,
  ``save_progress``, ``consume``, ``fail``, ``abandon`` and ``trash``;
* an operator may ``abandon`` or ``trash`` any unfinished job with
  ``force=True`` (the old owner's token stays stale forever after), and
  ``purge`` finished jobs.

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
from jobboard.checks import BoardChecks
from jobboard.claimview import LocalClaims
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
    unique_owner,
)
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
    "coerce_options",
    "redact_url",
    "unique_owner",
]


class JobBoard(LocalClaims, BoardChecks, abc.ABC):
    """Abstract job board. Subclasses implement one backend.

    Tunables are class constants, overridable per instance through the
    constructor (and through the URL's query string in :func:`jobboard.connect`).
    The local view of claims and the listeners come from
    :class:`~jobboard.claimview.LocalClaims`, the argument checks and the
    fencing rule from :class:`~jobboard.checks.BoardChecks`.
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
        LocalClaims.__init__(self, local_clock)

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
    ) -> Job:
        """Add a waiting job and wake waiting conductors. Atomic.

        Raises ``InvalidJob`` naming the field when anything is malformed;
        nothing is written then.
        """
        return self._post(self._validate_post(name, flow, store, priority, max_attempts, details))

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
    ) -> Iterator[Job]:
        """Jobs in claim order (priority, then post order).

        By default only unfinished jobs (waiting and claimed); ``states``
        selects others. ``only_unclaimed`` restricts to waiting jobs. A claim
        whose lease ran out is reported as waiting. ``ensure_fresh`` asks a
        backend that lists from a local cache to read the server instead.
        """
        wanted = self._normalise_states(states, only_unclaimed)
        return iter(self._list_jobs(wanted, flow, ensure_fresh))

    @property
    def job_count(self) -> int:
        """Number of unfinished (waiting or claimed) jobs."""
        return sum(1 for _ in self.iterjobs())

    @abc.abstractmethod
    def cancel(self, job: JobRef) -> Job:
        """Cancel a job: a waiting job ends cancelled at once; a claimed job is
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

    def consume(self, job: JobRef, who: str, token: int, *, result: Any = None) -> Job:
        """Finish an owned job as complete with its JSON ``result``. Fenced."""
        job_id = self._job_id(job)
        result_json = None if result is None else self._encode(result, "result", job_id)
        self._check_owner_args(job_id, who, token, False)
        return self._finish(
            Ending(job_id, who, token, JobState.COMPLETE, False, result_json, None, "consumed")
        )

    def fail(
        self, job: JobRef, who: str, token: int, *, error: str, cancelled: bool = False
    ) -> Job:
        """Finish an owned job as failed (or cancelled) with ``error``. Fenced."""
        job_id = self._job_id(job)
        message = self._validate_error(job_id, error)
        self._check_owner_args(job_id, who, token, False)
        state, event = (JobState.CANCELLED, "cancelled") if cancelled else (JobState.FAILED, "failed")
        return self._finish(Ending(job_id, who, token, state, False, None, message, event))

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
        return self._release_claim(Release(job_id, who, token, message, force, bool(refund)))

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
        return self._finish(
            Ending(job_id, who, token, JobState.TRASHED, force, None, message, "trashed")
        )

    def find_owner(self, job: JobRef) -> str | None:
        """The owner of the job's live claim, or ``None``."""
        return self.get(job).owner

    @abc.abstractmethod
    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a waiting job (of ``flows``) may be available; True if so,
        False on timeout. Woken by posts, not by busy polling."""

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
    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        """Write the encoded progress record if ``who``/``token`` hold the claim."""

    @abc.abstractmethod
    def _post(self, new: NewJob) -> Job:
        """Add the validated job as waiting, count and publish ``posted``; return it."""

    @abc.abstractmethod
    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        """The jobs in ``wanted`` states (of ``flow`` if given), in claim order."""

    @abc.abstractmethod
    def _finish(self, end: Ending) -> Job:
        """End an unfinished job as ``end`` says, fenced unless ``end.force``.

        Counts and publishes ``end.event``, forgets the local claim and
        returns the finished job.
        """

    @abc.abstractmethod
    def _release_claim(self, release: Release) -> Job:
        """Make a claimed job waiting again as ``release`` says, fenced unless
        ``release.force``. Publishes ``abandoned`` and forgets the claim."""

    @abc.abstractmethod
    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        """Delete the finished jobs in ``wanted`` states older than ``older_than``
        seconds; count and publish ``purged`` when any went; return how many."""

