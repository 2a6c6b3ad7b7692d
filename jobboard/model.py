"""The board's vocabulary: jobs, claims, states, priorities, entities and events.

Plain values with no behaviour beyond conversion, shared by the contract
(:mod:`jobboard.base`), every backend and every caller.
"""

from __future__ import annotations

import enum
import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from jobboard import errors

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "BoardEvent",
    "Claim",
    "ClaimStatus",
    "Entity",
    "Job",
    "JobPriority",
    "JobRef",
    "JobState",
    "Versioned",
    "unique_owner",
]


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
            f"job {errors.shown(job)}: field 'priority' must be one of "
            f"{', '.join(p.value for p in cls)}, got {errors.shown(value)}",
            field="priority",
            job=job,
        )


_PRIORITY_RANK = {p: i for i, p in enumerate(JobPriority)}


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    WAITING = "waiting"
    SCHEDULED = "scheduled"  # posted for later: claimable from its ``not_before``
    CLAIMED = "claimed"
    COMPLETE = "complete"
    FAILED = "failed"
    TRASHED = "trashed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves (until retention purges it)."""
        return self in FINISHED_STATES


#: The states of an unfinished job, the ones listings show by default.
ACTIVE_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.CLAIMED})
#: The states a job never leaves (until retention purges it).
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
    #: The dedupe key it was posted with (unique per namespace while the job is kept).
    key: str | None = None
    #: Board time (epoch seconds) from which it may be claimed, when posted for later.
    not_before: float | None = None
    #: The id of the job that posted it, when it is a child job.
    parent: str | None = None

    @property
    def uuid(self) -> str:
        """Alias of ``id`` in the reference vocabulary."""
        return self.id

    def __repr__(self) -> str:
        """Who and where the job is, never what it carries: the store, result,
        details and error may be large or secret, and reprs end up in logs."""
        owner = f", owner={errors.shown(self.owner)}, token={self.token}" if self.owner else ""
        return (
            f"Job(id={errors.shown(self.id)}, name={errors.shown(self.name)}, "
            f"flow={errors.shown(self.flow)}, state={self.state.value!r}{owner})"
        )

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


class Versioned(NamedTuple):
    """A stored record with its version, as compare-and-set stores return it."""

    record: dict[str, Any]
    version: int


def unique_owner(name: str) -> str:
    """An owner id that no other process shares: ``name@host:pid:random``."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: What names a job in the board's methods: the job, a claim on it, or its id.
JobRef = Job | Claim | str


def job_id_of(job: JobRef) -> str:
    """The id a job reference (a job, a claim or an id) names."""
    if type(job) is str and job:  # the most frequent reference, checked first
        return job
    if isinstance(job, Job):
        return job.id
    if isinstance(job, Claim):
        return job.job_id
    if isinstance(job, str) and job:
        return job
    raise errors.InvalidJob(f"not a job reference: {errors.shown(job)}", field="job")
