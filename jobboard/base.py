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
import enum
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

from jobboard import errors

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
    "JobState",
    "unique_owner",
]

log = logging.getLogger(__name__)


class JobPriority(enum.StrEnum):
    """The five priority levels; higher priority jobs are claimed first."""

    VERY_HIGH = "VERY_HIGH"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"
    VERY_LOW = "VERY_LOW"

    @property
    def rank(self) -> int:
        """Sort key: 0 for VERY_HIGH up to 4 for VERY_LOW (smaller is claimed first)."""
        return _PRIORITY_RANK[self]

    @classmethod
    def convert(cls, value: JobPriority | str, *, job: str | None = None) -> JobPriority:
        """Accept a member or its name (any case); raise ``InvalidJob`` naming ``priority``."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().upper())
            except ValueError:
                pass
        raise errors.InvalidJob(
            f"job {job!r}: field 'priority' must be one of "
            f"{', '.join(p.value for p in cls)}, got {value!r}",
            field="priority",
            job=job,
        )


_PRIORITY_RANK = {p: i for i, p in enumerate(JobPriority)}


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    COMPLETE = "complete"
    FAILED = "failed"
    TRASHED = "trashed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves (until retention purges it)."""
        return self in FINISHED_STATES


ACTIVE_STATES = frozenset({JobState.WAITING, JobState.CLAIMED})
FINISHED_STATES = frozenset(
    {JobState.COMPLETE, JobState.FAILED, JobState.TRASHED, JobState.CANCELLED}
)


class ClaimStatus(enum.StrEnum):
    """What the local process knows about one of its claims, without a round trip."""

    OWNED = "owned"
    UNCERTAIN = "uncertain"  # connection suspended: the claim may or may not survive
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job as the board stored it when it was read."""

    id: str
    name: str
    flow: str
    store: dict[str, Any]
    priority: JobPriority = JobPriority.NORMAL
    state: JobState = JobState.WAITING
    created_at: float = 0.0
    updated_at: float = 0.0
    seq: int = 0
    attempts: int = 0
    max_attempts: int = 5
    owner: str | None = None
    token: int = 0
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    finished_at: float | None = None
    result: Any = None
    last_error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def uuid(self) -> str:
        """Alias of ``id`` in the reference vocabulary."""
        return self.id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        data = asdict(self)
        data["priority"] = self.priority.value
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_dict` output; unknown keys are ignored."""
        known = {k: data[k] for k in _JOB_FIELDS if k in data}
        known["priority"] = JobPriority(known.get("priority", "NORMAL"))
        known["state"] = JobState(known.get("state", "waiting"))
        return cls(**known)


_JOB_FIELDS = tuple(Job.__dataclass_fields__)
_CLAIM_ENDING_EVENTS = frozenset(
    {"claimed", "abandoned", "trashed", "consumed", "failed", "cancelled", "expired"}
)


@dataclass(frozen=True, slots=True)
class Claim:
    """Proof of ownership of one job: pass it (or its token) to every fenced write.

    ``expires_at`` is the lease end in board time (``None`` for session-bound
    claims); ``deadline`` is the same end on this process's monotonic clock,
    measured from *before* the request was sent, so the owner always believes
    its claim gone no later than the board does.
    """

    job_id: str
    owner: str
    token: int
    lease: float | None = None
    expires_at: float | None = None
    deadline: float = math.inf
    job: Job | None = None

    def with_deadline(self, deadline: float, expires_at: float | None) -> Claim:
        """A copy with a renewed lease."""
        return replace(self, deadline=deadline, expires_at=expires_at)


@dataclass(frozen=True, slots=True)
class Entity:
    """A registered participant (a conductor) with its self-reported metadata."""

    name: str
    kind: str
    metadata: dict[str, Any]
    last_seen: float


@dataclass(frozen=True, slots=True)
class BoardEvent:
    """A change on the board, delivered to listeners added with ``add_listener``.

    ``kind`` is one of: posted, claimed, consumed, failed, abandoned, trashed,
    cancelled, cancel_requested, expired, purged.
    """

    kind: str
    job_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def redact_url(url: str) -> str:
    """A board URL without its password, for messages, logs and displays."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def unique_owner(name: str) -> str:
    """An owner id that no other process shares: ``name@host:pid:random``."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


JobRef = Job | Claim | str

_FLOW_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
_ATOM_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=False)


class JobBoard(abc.ABC):
    """Abstract job board. Subclasses implement one backend.

    Tunables are class constants, overridable per instance through the
    constructor (and through the URL's query string in :func:`jobboard.connect`).
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
        self._local_clock = local_clock
        self._local_lock = threading.Lock()
        self._held: dict[str, Claim] = {}
        self._lost: set[str] = set()
        self._cancel_flags: set[str] = set()
        self._listeners: list[Callable[[BoardEvent], None]] = []

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

    @abc.abstractmethod
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

    @abc.abstractmethod
    def get(self, job: JobRef) -> Job:
        """Read one job (any state); raises ``JobNotFound``."""

    @abc.abstractmethod
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
        whose lease ran out is reported as waiting.
        """

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
            job_id,
            who,
            token,
            state=JobState.COMPLETE,
            force=False,
            result_json=result_json,
            error=None,
            event="consumed",
        )

    def fail(
        self, job: JobRef, who: str, token: int, *, error: str, cancelled: bool = False
    ) -> Job:
        """Finish an owned job as failed (or cancelled) with ``error``. Fenced."""
        job_id = self._job_id(job)
        message = self._validate_error(job_id, error)
        self._check_owner_args(job_id, who, token, False)
        return self._finish(
            job_id,
            who,
            token,
            state=JobState.CANCELLED if cancelled else JobState.FAILED,
            force=False,
            result_json=None,
            error=message,
            event="cancelled" if cancelled else "failed",
        )

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
        return self._release_claim(
            job_id, who, token, reason=message, force=force, refund=bool(refund)
        )

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
            job_id,
            who,
            token,
            state=JobState.TRASHED,
            force=force,
            result_json=None,
            error=message,
            event="trashed",
        )

    def find_owner(self, job: JobRef) -> str | None:
        """The owner of the job's live claim, or ``None``."""
        return self.get(job).owner

    @abc.abstractmethod
    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a waiting job (of ``flows``) may be available; True if so,
        False on timeout. Woken by posts, not by busy polling."""

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

    # -- events and the local view of claims --------------------------------

    def add_listener(self, callback: Callable[[BoardEvent], None]) -> None:
        """Call ``callback(event)`` for board changes (from a backend thread)."""
        with self._local_lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[BoardEvent], None]) -> None:
        """Stop calling a callback added with :meth:`add_listener`."""
        with self._local_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _emit(self, event: BoardEvent) -> None:
        """Apply an event to the local claim view, then tell listeners."""
        if event.job_id is not None:
            self._apply_event(event)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # a listener must never break the board
                log.exception("board listener %r failed", callback)

    def _apply_event(self, event: BoardEvent) -> None:
        """Mark a held claim lost when an event shows someone else ended or took it."""
        job_id = event.job_id
        assert job_id is not None
        with self._local_lock:
            if event.kind == "cancel_requested":
                self._cancel_flags.add(job_id)
                return
            held = self._held.get(job_id)
            if held is None or event.kind not in _CLAIM_ENDING_EVENTS:
                return
            data = event.data
            token = data.get("token")
            if isinstance(token, int) and token < held.token:
                return  # a late event about an earlier claim of a job we hold again
            ours = data.get("token") == held.token and (
                event.kind == "claimed" or data.get("owner") == held.owner
            )
            if event.kind == "expired":
                # Only the claim whose lease ran out is lost (not a newer claim of ours).
                if data.get("token") in (None, held.token):
                    self._lost.add(job_id)
            elif data.get("forced") or not ours:
                self._lost.add(job_id)

    def _track(self, claim: Claim) -> Claim:
        with self._local_lock:
            self._held[claim.job_id] = claim
            self._lost.discard(claim.job_id)
            self._cancel_flags.discard(claim.job_id)
        return claim

    def _retrack(self, claim: Claim) -> None:
        """Store a renewed copy of a claim we still hold (keeps its flags)."""
        with self._local_lock:
            held = self._held.get(claim.job_id)
            if held is not None and held.token == claim.token:
                self._held[claim.job_id] = claim

    def _apply_renewals(self, renewed: Mapping[str, Claim | None]) -> None:
        """Record the outcome of a renew call in the local claim view."""
        for job_id, claim in renewed.items():
            if claim is None:
                self._mark_lost(job_id)
            else:
                self._retrack(claim)

    def _untrack(self, job_id: str) -> None:
        with self._local_lock:
            self._held.pop(job_id, None)
            self._lost.discard(job_id)
            self._cancel_flags.discard(job_id)

    def _mark_lost(self, job_id: str) -> None:
        with self._local_lock:
            if job_id in self._held:
                self._lost.add(job_id)

    def _mark_cancel(self, job_id: str) -> None:
        with self._local_lock:
            self._cancel_flags.add(job_id)

    def _connection_uncertain(self) -> bool:
        """True while the connection is suspended (session-bound backends)."""
        return False

    def claim_status(self, claim: Claim | str) -> ClaimStatus:
        """Whether this process still owns a claim, from local knowledge only.

        Costs no round trip: it reads the lease deadline kept locally (renewed
        by :meth:`renew`), claim-loss and release events pushed by the backend,
        and the connection state.
        """
        job_id = claim if isinstance(claim, str) else claim.job_id
        held = self._held.get(job_id)
        if held is None or job_id in self._lost:
            return ClaimStatus.LOST
        if isinstance(claim, Claim) and claim.token != held.token:
            return ClaimStatus.LOST
        if self._local_clock() >= held.deadline:
            return ClaimStatus.LOST
        if self._connection_uncertain():
            return ClaimStatus.UNCERTAIN
        return ClaimStatus.OWNED

    def cancel_requested(self, job: JobRef) -> bool:
        """Whether a cancel of one of our claimed jobs has reached us (local, no round trip)."""
        return self._job_id(job) in self._cancel_flags

    def held_claim(self, job: JobRef) -> Claim | None:
        """The latest local copy of our claim on ``job`` (with the renewed deadline)."""
        return self._held.get(self._job_id(job))

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
    def _finish(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        state: JobState,
        force: bool,
        result_json: str | None,
        error: str | None,
        event: str,
    ) -> Job:
        """End an unfinished job in the finished ``state``, fenced unless ``force``.

        ``result_json`` (already encoded) becomes the result; ``error``, when
        given, replaces ``last_error``. Counts and publishes ``event``, forgets
        the local claim and returns the finished job.
        """

    @abc.abstractmethod
    def _release_claim(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        reason: str | None,
        force: bool,
        refund: bool = False,
    ) -> Job:
        """Make a claimed job waiting again, fenced unless ``force``; ``reason``, when
        given, replaces ``last_error``; ``refund`` takes one off ``attempts`` (never
        below zero). Publishes ``abandoned`` and forgets the claim."""

    @abc.abstractmethod
    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        """Delete the finished jobs in ``wanted`` states older than ``older_than``
        seconds; count and publish ``purged`` when any went; return how many."""

    # -- helpers shared by backends -----------------------------------------

    @staticmethod
    def _job_id(job: JobRef) -> str:
        if isinstance(job, Job):
            return job.id
        if isinstance(job, Claim):
            return job.job_id
        if isinstance(job, str) and job:
            return job
        raise errors.InvalidJob(f"not a job reference: {job!r}", field="job")

    def _lease_for(self, lease: float | None) -> float:
        value = self.lease if lease is None else float(lease)
        if not 0 < value <= MAX_LEASE:
            raise errors.InvalidJob(
                f"field 'lease' must be a number of seconds above 0 and at most {MAX_LEASE:g}, "
                f"got {lease!r}",
                field="lease",
            )
        return value

    def _check_owner_args(self, job_id: str, who: str, token: int | None, force: bool) -> None:
        if not isinstance(who, str) or not who:
            raise errors.InvalidJob(
                f"job {job_id!r}: field 'who' must be a non-empty string", field="who", job=job_id
            )
        if not force and (token is None or isinstance(token, bool) or not isinstance(token, int)):
            raise errors.NotOwner(
                f"job {job_id!r}: a fenced operation needs the claim's integer token (got {token!r})"
            )

    @staticmethod
    def _check_fence(
        job_id: str,
        state: JobState,
        current: int,
        owner: str | None,
        who: str,
        token: int | None,
        force: bool,
    ) -> None:
        """Raise the contract's error when ``who``/``token`` may not write to a job.

        ``state``, ``current`` (token) and ``owner`` are the job's as stored,
        with an expired lease already reported as waiting. Backends call this
        inside their atomic check-and-write.
        """
        if state.finished:
            if not force and token is not None and token < current:
                raise errors.StaleToken(
                    f"job {job_id!r}: token {token} is stale; the job is {state.value}"
                )
            raise errors.InvalidState(f"job {job_id!r} is already {state.value}")
        if force:
            return
        assert token is not None
        if state is not JobState.CLAIMED:
            if token < current:
                raise errors.StaleToken(
                    f"job {job_id!r}: token {token} is stale (current {current}); not claimed now"
                )
            raise errors.NotOwner(f"job {job_id!r} is not claimed (its claim has ended)")
        if token != current:
            cls = errors.StaleToken if token < current else errors.NotOwner
            raise cls(f"job {job_id!r}: token {token} does not match the current claim ({current})")
        if owner != who:
            raise errors.NotOwner(f"job {job_id!r} is owned by {owner!r}, not {who!r}")

    def _encode(self, value: Any, field_name: str, job: str | None) -> str:
        """JSON-encode a payload, enforcing JSON-only content and the size limit."""
        try:
            text = _json_dumps(value)
        except (TypeError, ValueError) as err:
            raise errors.InvalidJob(
                f"job {job!r}: field {field_name!r} is not JSON-serialisable: {err}",
                field=field_name,
                job=job,
            ) from err
        if len(text.encode()) > self.max_payload:
            raise errors.InvalidJob(
                f"job {job!r}: field {field_name!r} is {len(text.encode())} bytes encoded, "
                f"over the limit of {self.max_payload}",
                field=field_name,
                job=job,
            )
        return text

    def _validate_post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None,
        priority: JobPriority | str,
        max_attempts: int | None,
        details: Mapping[str, Any] | None,
    ) -> tuple[JobPriority, int, str, str]:
        """Check ``post``'s arguments; returns (priority, max_attempts, store_json, details_json)."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise errors.InvalidJob(
                f"field 'name' must be a non-empty string of at most 200 characters, got {name!r}",
                field="name",
                job=name if isinstance(name, str) else None,
            )
        if not isinstance(flow, str) or not _FLOW_RE.match(flow):
            raise errors.InvalidJob(
                f"job {name!r}: field 'flow' must match {_FLOW_RE.pattern}, got {flow!r}",
                field="flow",
                job=name,
            )
        prio = JobPriority.convert(priority, job=name)
        attempts = self.max_attempts if max_attempts is None else max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise errors.InvalidJob(
                f"job {name!r}: field 'max_attempts' must be an integer from 1 to 1000, "
                f"got {max_attempts!r}",
                field="max_attempts",
                job=name,
            )
        for field_name, value in (("store", store), ("details", details)):
            if value is not None and not isinstance(value, Mapping):
                raise errors.InvalidJob(
                    f"job {name!r}: field {field_name!r} must be a JSON object, "
                    f"got {type(value).__name__}",
                    field=field_name,
                    job=name,
                )
            for key in value or ():
                if not isinstance(key, str):
                    raise errors.InvalidJob(
                        f"job {name!r}: field {field_name!r} has a non-string key {key!r}",
                        field=field_name,
                        job=name,
                    )
        store_json = self._encode(dict(store or {}), "store", name)
        details_json = self._encode(dict(details or {}), "details", name)
        return prio, attempts, store_json, details_json

    def _validate_atom(self, job_id: str, atom_name: str, record: Mapping[str, Any]) -> str:
        if not isinstance(atom_name, str) or not _ATOM_RE.match(atom_name):
            raise errors.InvalidJob(
                f"job {job_id!r}: field 'atom_name' must be a printable string of 1-200 "
                f"characters, got {atom_name!r}",
                field="atom_name",
                job=job_id,
            )
        if not isinstance(record, Mapping):
            raise errors.InvalidJob(
                f"job {job_id!r}: field 'record' must be a JSON object", field="record", job=job_id
            )
        return self._encode(dict(record), "record", job_id)

    def _validate_error(self, job_id: str, error: Any, field_name: str = "error") -> str:
        if not isinstance(error, str):
            raise errors.InvalidJob(
                f"job {job_id!r}: field {field_name!r} must be a string",
                field=field_name,
                job=job_id,
            )
        limit = max(1024, self.max_payload // 4)
        return error if len(error) <= limit else error[: limit - 3] + "..."

    @staticmethod
    def _normalise_states(
        states: Collection[JobState | str] | None, only_unclaimed: bool
    ) -> frozenset[JobState]:
        if only_unclaimed:
            return frozenset({JobState.WAITING})
        if states is None:
            return ACTIVE_STATES
        out = set()
        for state in states:
            try:
                out.add(JobState(state))
            except ValueError as err:
                raise errors.InvalidJob(
                    f"field 'states' has an unknown state {state!r}", field="states"
                ) from err
        return frozenset(out)

    @staticmethod
    def _poison_reason(attempts: int, max_attempts: int) -> str:
        return (
            f"poison job: claimed {attempts} times without finishing (max_attempts={max_attempts})"
        )


_FLOAT_OPTIONS = ("lease", "retention")
_INT_OPTIONS = ("max_payload", "max_attempts")
#: Longest lease a claim may ask for, in seconds (one day): a lease is renewed by
#: its owner's heartbeat, a longer one only delays taking over from a dead owner.
MAX_LEASE = 86400.0
#: Allowed ranges of the common board options: (low, high, low included).
_OPTION_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "lease": (0.0, MAX_LEASE, False),
    "retention": (0.0, 100 * 365 * 86400.0, True),
    "max_payload": (1, 1 << 30, True),
    "max_attempts": (1, 1000, True),
}


def coerce_options(options: Mapping[str, Any], url: str = "") -> dict[str, Any]:
    """Convert the common board options given as URL query strings to numbers,
    and check they are in range.

    Raises ``BadURL`` naming the option (never the URL's password) when a value
    does not parse or is out of range.
    """
    out = dict(options)
    shown = redact_url(url)
    for key in _FLOAT_OPTIONS + _INT_OPTIONS:
        if key in out and isinstance(out[key], str):
            try:
                out[key] = float(out[key]) if key in _FLOAT_OPTIONS else int(out[key])
            except ValueError as err:
                raise errors.BadURL(
                    f"board URL {shown!r}: option {key!r} must be a number, got {out[key]!r}"
                ) from err
    check_option_bounds(out, shown)
    return out


def check_option_bounds(options: Mapping[str, Any], where: str = "") -> None:
    """Raise ``BadURL`` naming the first common option (lease, retention,
    max_payload, max_attempts) that is not a number in its range."""
    for key, (low, high, low_ok) in _OPTION_BOUNDS.items():
        value = options.get(key)
        if value is None:
            continue
        is_int = key in _INT_OPTIONS
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int if is_int else (int, float))
            and (low <= value if low_ok else low < value)
            and value <= high
        )
        if not ok:
            kind = "a whole number" if is_int else "a number"
            above = f"from {low:g}" if low_ok else f"above {low:g}"
            raise errors.BadURL(
                f"board {where!r}: option {key!r} must be {kind} {above} to {high:g}, got {value!r}"
            )
