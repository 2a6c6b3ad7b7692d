"""The validated changes the contract hands to a backend's atomic hooks.

:class:`~jobboard.base.JobBoard` checks every argument of ``post``,
``consume``, ``fail``, ``trash`` and ``abandon`` once, then passes one of
these values to the backend, which only has to check the fence and write.
They also say, once for every backend, what the changed job looks like and
which event tells of the change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from jobboard.model import BoardEvent, Job, JobPriority, JobState

__all__ = ["Ending", "NewJob", "Release"]


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to post, its payloads already encoded as JSON.

    ``key`` is its dedupe key; ``delay`` (seconds from board time at the post)
    or ``not_before`` (board time) say when it becomes claimable; ``parent``
    is the id of the job that posts it.
    """

    name: str
    flow: str
    priority: JobPriority
    max_attempts: int
    store_json: str
    details_json: str
    key: str | None = None
    delay: float | None = None
    not_before: float | None = None
    parent: str | None = None

    def due(self, now: float) -> float | None:
        """The board time from which the job may be claimed (None: at once)."""
        if self.not_before is not None:
            return self.not_before
        return None if self.delay is None else now + self.delay

    def state(self, now: float) -> JobState:
        """``scheduled`` when the job is due after ``now``, else ``waiting``."""
        due = self.due(now)
        return JobState.SCHEDULED if due is not None and due > now else JobState.WAITING

    def job(self, job_id: str, created_at: float, seq: int = 0) -> Job:
        """The job (waiting, or scheduled) this post creates at board time ``created_at``."""
        return Job(
            id=job_id,
            name=self.name,
            flow=self.flow,
            store=json.loads(self.store_json),
            priority=self.priority,
            created_at=created_at,
            updated_at=created_at,
            seq=seq,
            max_attempts=self.max_attempts,
            details=json.loads(self.details_json),
            state=self.state(created_at),
            key=self.key,
            not_before=self.due(created_at),
            parent=self.parent,
        )

    def event(self, job_id: str, not_before: float | None = None) -> BoardEvent:
        """The ``posted`` event of this job (with its due time when posted for later)."""
        data: dict[str, Any] = {"flow": self.flow, "name": self.name}
        if not_before is not None:
            data["not_before"] = not_before
        return BoardEvent("posted", job_id, data)


@dataclass(frozen=True, slots=True)
class Ending:
    """An unfinished job ending in a finished ``state``: fenced by ``who`` and
    ``token`` unless ``force``; ``event`` is what it is counted and published as."""

    job_id: str
    who: str
    token: int | None
    state: JobState
    force: bool
    result_json: str | None
    error: str | None
    event: str

    @property
    def result(self) -> Any:
        """The decoded result (``None`` when none was given)."""
        return None if self.result_json is None else json.loads(self.result_json)

    def apply(self, job: Job, now: float) -> Job:
        """The job as this ending leaves it at board time ``now``."""
        return replace(
            job,
            state=self.state,
            owner=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
            result=self.result,
            last_error=self.last_error(job.last_error),
        )

    def last_error(self, previous: str | None) -> str | None:
        """The job's ``last_error`` after this ending: none for a complete job (an
        earlier attempt's error, such as an expired lease, no longer applies),
        else the ending's error, else the one it had."""
        if self.state is JobState.COMPLETE:
            return None
        return self.error if self.error is not None else previous

    def published(self, token: int, flow: str | None) -> BoardEvent:
        """The event telling of this ending of the claim with ``token``."""
        return _claim_event(self.event, self, token, flow)


@dataclass(frozen=True, slots=True)
class Release:
    """A claimed job made waiting again: fenced unless ``force``; ``reason``
    replaces ``last_error`` when given; ``refund`` gives back the claim's attempt."""

    job_id: str
    who: str
    token: int | None
    reason: str | None
    force: bool
    refund: bool

    def attempts(self, counted: int) -> int:
        """The job's attempts after the release."""
        return max(0, counted - 1) if self.refund else counted

    def apply(self, job: Job, now: float) -> Job:
        """The job as this release leaves it at board time ``now``."""
        return replace(
            job,
            state=JobState.WAITING,
            owner=None,
            claimed_at=None,
            lease_expires_at=None,
            updated_at=now,
            last_error=self.reason if self.reason is not None else job.last_error,
            attempts=self.attempts(job.attempts),
        )

    def published(self, token: int, flow: str | None) -> BoardEvent:
        """The ``abandoned`` event of the claim with ``token``."""
        return _claim_event("abandoned", self, token, flow)


def _claim_event(kind: str, change: Ending | Release, token: int, flow: str | None) -> BoardEvent:
    return BoardEvent(
        kind,
        change.job_id,
        {"token": token, "owner": change.who, "forced": change.force, "flow": flow},
    )
