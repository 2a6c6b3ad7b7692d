"""A plain Python model of the board contract (jobboard/base.py), for property tests.

It knows jobs, claims, tokens, attempts, cancel flags and progress records,
and nothing about any backend. Each method applies one operation and returns
what the contract says the caller sees: a value, or the error class a refusal
raises. Time is not modelled: leases are long unless a test expires one on
purpose (:meth:`BoardModel.expire`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobboard import JobPriority, JobState
from jobboard.errors import InvalidState, NotOwner, StaleToken, UnclaimableJob

FINISHED = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.TRASHED, JobState.CANCELLED})


@dataclass
class ModelJob:
    """What the board must report about one job."""

    id: str
    seq: int
    priority: JobPriority
    max_attempts: int
    state: JobState = JobState.WAITING
    token: int = 0
    owner: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    #: The owner whose lease ran out while its connection lived on (its claim record stays).
    lapsed: str | None = None
    result: Any = None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class BoardModel:
    """Every job of one namespace, changed only through the contract's operations."""

    def __init__(self) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self._seq = 0

    # -- producers and anyone -------------------------------------------------

    def post(self, job_id: str, priority: JobPriority, max_attempts: int) -> ModelJob:
        self._seq += 1
        job = ModelJob(job_id, self._seq, priority, max_attempts)
        self.jobs[job_id] = job
        return job

    def cancel(self, job_id: str) -> type[Exception] | None:
        job = self.jobs[job_id]
        if job.finished:
            return InvalidState
        if job.state is JobState.WAITING:
            job.state = JobState.CANCELLED
        else:
            job.cancel_requested = True
        return None

    def unfinished(self) -> set[str]:
        return {i for i, j in self.jobs.items() if not j.finished}

    # -- claims ---------------------------------------------------------------

    def claim(self, job_id: str, who: str) -> type[Exception] | None:
        """Claim one job; a job out of attempts is trashed as poison instead."""
        job = self.jobs[job_id]
        if job.state is not JobState.WAITING:
            return UnclaimableJob
        if job.attempts >= job.max_attempts:
            job.state = JobState.TRASHED
            return UnclaimableJob
        job.state = JobState.CLAIMED
        job.lapsed = None
        job.token += 1
        job.attempts += 1
        job.owner = who
        job.cancel_requested = False
        return None

    def claim_next(self, who: str) -> str | None:
        """The job ``claim_next`` takes: best priority, then post order; poison trashed on the way."""
        for job in sorted(self.jobs.values(), key=lambda j: (j.priority.rank, j.seq)):
            if job.state is JobState.WAITING and self.claim(job.id, who) is None:
                return job.id
        return None

    def candidates(self) -> list[ModelJob]:
        """Waiting jobs with attempts left, in claim order."""
        return [
            j
            for j in sorted(self.jobs.values(), key=lambda j: (j.priority.rank, j.seq))
            if j.state is JobState.WAITING and j.attempts < j.max_attempts
        ]

    def poisoned(self) -> list[str]:
        """Waiting jobs out of attempts: the next claim that meets one trashes it."""
        return [
            i
            for i, j in self.jobs.items()
            if j.state is JobState.WAITING and j.attempts >= j.max_attempts
        ]

    def holds(self, job_id: str, who: str, token: int) -> bool:
        job = self.jobs[job_id]
        return job.state is JobState.CLAIMED and job.owner == who and job.token == token

    def expire(self, job_id: str, lapsed: bool = True) -> None:
        """The claim's lease ran out: waiting again, same token (the next claim gets a newer one)."""
        job = self.jobs[job_id]
        assert job.state is JobState.CLAIMED
        job.lapsed = job.owner if lapsed else None
        job.state = JobState.WAITING
        job.owner = None

    def drop_owner(self, who: str) -> None:
        """Every claim of ``who`` ends at once (its session closed)."""
        for job in self.jobs.values():
            if job.state is JobState.CLAIMED and job.owner == who:
                self.expire(job.id, lapsed=False)
            elif job.lapsed == who:
                job.lapsed = None

    # -- fenced writes --------------------------------------------------------

    def refusal(self, job_id: str, who: str, token: int) -> type[Exception] | None:
        """The error a fenced write by ``who``/``token`` raises, or None if it is allowed."""
        job = self.jobs[job_id]
        if job.finished:
            return NotOwner if token < job.token else InvalidState  # StaleToken or InvalidState
        if token < job.token:
            return StaleToken
        if not self.holds(job_id, who, token):
            return NotOwner
        return None

    def save_progress(self, job_id: str, who: str, token: int, atom: str, record: dict) -> Any:
        refused = self.refusal(job_id, who, token)
        if refused is None:
            self.jobs[job_id].progress[atom] = record
        return refused

    def finish(self, job_id: str, who: str, token: int, state: JobState, result: Any = None) -> Any:
        refused = self.refusal(job_id, who, token)
        if refused is None:
            job = self.jobs[job_id]
            job.state, job.owner, job.result = state, None, result
        return refused

    def abandon(self, job_id: str, who: str, token: int, refund: bool) -> Any:
        refused = self.refusal(job_id, who, token)
        if refused is None:
            job = self.jobs[job_id]
            job.state, job.owner, job.lapsed = JobState.WAITING, None, None
            if refund:
                job.attempts = max(0, job.attempts - 1)
        return refused

    def force(self, job_id: str, state: JobState) -> type[Exception] | None:
        """An operator's forced abandon (``state`` WAITING) or trash of any unfinished job."""
        job = self.jobs[job_id]
        if job.finished:
            return InvalidState
        if state is JobState.WAITING:
            if job.state is not JobState.CLAIMED:
                return InvalidState
            job.state, job.owner, job.lapsed = JobState.WAITING, None, None
            return None
        job.state, job.owner = JobState.TRASHED, None
        return None
