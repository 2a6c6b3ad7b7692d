"""The dashboard's admin actions: cancel, retry and trash one job.

Each checks the job's state first and refuses with ``InvalidState`` (HTTP 409),
changing nothing, when the action does not fit; the answer is the job (and,
for a retry, the new job) as lists show it. Bodies are JSON objects; unknown
keys are refused so that a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jobboard import errors
from jobboard.admin.web.snapshot import job_summary
from jobboard.base import Job, JobBoard, JobState

__all__ = ["ACTIONS", "cancel", "retry", "trash"]

#: States a job may be retried from.
RETRYABLE = frozenset({JobState.FAILED, JobState.TRASHED, JobState.CANCELLED})


def _fields(body: Mapping[str, Any], job_id: str, allowed: Mapping[str, type]) -> dict[str, Any]:
    """The body's fields after checking names and types; errors name the field and the job."""
    for key, value in body.items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise errors.InvalidJob(
                f"job {job_id!r}: unknown field {key!r} (allowed: {names})", field=key, job=job_id
            )
        if type(value) is not allowed[key]:
            raise errors.InvalidJob(
                f"job {job_id!r}: field {key!r} must be a {allowed[key].__name__}",
                field=key,
                job=job_id,
            )
    return dict(body)


def _refuse(job: Job, action: str, allowed: str) -> errors.InvalidState:
    return errors.InvalidState(
        f"cannot {action} job {job.id} ({job.name!r}): it is {job.state.value}; it must be {allowed}"
    )


def cancel(board: JobBoard, job_id: str, body: Mapping[str, Any], who: str) -> dict[str, Any]:
    """End a waiting job, or ask a claimed job's conductor to stop it."""
    _fields(body, job_id, {})
    job = board.get(job_id)
    if job.state.finished:
        raise _refuse(job, "cancel", "waiting or claimed")
    after = board.cancel(job)
    return {"job": job_summary(after), "requested": after.state is JobState.CLAIMED}


def trash(board: JobBoard, job_id: str, body: Mapping[str, Any], who: str) -> dict[str, Any]:
    """End an unfinished job as trashed (never run again); its owner's token turns stale."""
    fields = _fields(body, job_id, {"reason": str})
    job = board.get(job_id)
    if job.state.finished:
        raise _refuse(job, "trash", "waiting or claimed")
    reason = fields.get("reason") or f"trashed by {who}"
    after = board.trash(job, who, force=True, reason=reason)
    return {"job": job_summary(after)}


def retry(board: JobBoard, job_id: str, body: Mapping[str, Any], who: str) -> dict[str, Any]:
    """Post a failed, trashed or cancelled job again as a new job (``details.retry_of``).

    A job already retried (a job naming it in ``retry_of`` is on the board) is
    refused unless the body says ``{"again": true}``.
    """
    fields = _fields(body, job_id, {"again": bool})
    job = board.get(job_id)
    if job.state not in RETRYABLE:
        raise _refuse(job, "retry", "failed, trashed or cancelled")
    if not fields.get("again"):
        earlier = [
            j.id
            for j in board.iterjobs(states=list(JobState), flow=job.flow)
            if isinstance(j.details, Mapping) and j.details.get("retry_of") == job.id
        ]
        if earlier:
            raise errors.InvalidState(
                f"job {job.id} was already retried as {', '.join(earlier)}; "
                'send {"again": true} to retry it once more'
            )
    new = board.post(
        job.name,
        job.flow,
        job.store,
        priority=job.priority,
        max_attempts=job.max_attempts,
        details={**job.details, "retry_of": job.id, "retried_by": who},
    )
    return {"job": job_summary(job), "new": job_summary(new)}


#: Every action by the name used in ``POST /api/jobs/{id}/{name}``.
ACTIONS: dict[str, Callable[[JobBoard, str, Mapping[str, Any], str], dict[str, Any]]] = {
    "cancel": cancel,
    "retry": retry,
    "trash": trash,
}
