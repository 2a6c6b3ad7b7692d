"""Reading what the Redis board stores: job hashes, script replies and refusals.

A job is one hash (``jb:{ns}:job:<id>``, layout in ``lua/_lib.lua``) whose
fields are text; :func:`decode_job` turns it into a :class:`~jobboard.model.Job`
or raises ``InvalidJob`` naming the job and the field, so that a corrupt
record is reported (and can be trashed) instead of breaking a caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from jobboard import errors
from jobboard.model import Job, JobPriority, JobState

__all__ = [
    "PROGRESS_FIELD",
    "REFUSALS",
    "decode_job",
    "json_object",
    "pairs",
    "readable_job",
    "server_time",
    "stored_field",
    "text",
    "unreadable_job",
]

#: The prefix of a job hash's fields that hold its progress records ("progress:<atom>",
#: PROGRESS in ``lua/_lib.lua``); decode_job ignores them.
PROGRESS_FIELD = "progress:"

#: Longest piece of a corrupt record echoed in a placeholder (names, flows, reasons).
_ECHO_LIMIT = 200

T = TypeVar("T")

#: Error replies of the scripts ("JB <CODE> <rest>") and what they mean here.
REFUSALS: dict[str, tuple[type[errors.BoardError], str]] = {
    "NOTFOUND": (errors.JobNotFound, "no job {job} on board {board}"),
    "FINISHED": (errors.InvalidState, "job {job} is already {rest}"),
    "IDLE": (errors.InvalidState, "job {job} is not claimed; nothing to abandon"),
    "STALE": (errors.StaleToken, "job {job}: the token is stale (current token {rest})"),
    "NOTCLAIMED": (errors.NotOwner, "job {job} is not claimed (its lease may have expired)"),
    "MISMATCH": (errors.NotOwner, "job {job}: the token does not match the claim's ({rest})"),
    "NOTOWNER": (errors.NotOwner, "job {job} is owned by {rest}"),
    "UNCLAIMABLE": (errors.UnclaimableJob, "job {job} is {rest}; it cannot be claimed"),
    "POISON": (errors.UnclaimableJob, "job {job} was trashed: {rest}"),
    "CORRUPT": (errors.InvalidJob, ""),
    "SETTLING": (
        errors.BoardUnavailable,
        "board {board}: the server restarted just now; claims resume in {rest} s, once every "
        "running client has checked that nothing it saw was lost",
    ),
}


def text(value: bytes | str) -> str:
    """A reply item as text."""
    return value.decode() if isinstance(value, bytes) else value


def pairs(flat: list[Any]) -> dict[str, Any]:
    """A flat HGETALL-style reply as a dict of text (a value that is not UTF-8
    stays bytes, for :func:`decode_job` to report)."""
    if len(flat) % 2 == 0:
        try:  # the common case: every item is UTF-8 bytes
            return {
                key.decode(): value.decode()
                for key, value in zip(flat[::2], flat[1::2], strict=True)
            }
        except (AttributeError, UnicodeDecodeError):
            pass
    out: dict[str, Any] = {}
    for key, value in zip(flat[::2], flat[1::2], strict=True):
        try:
            out[_lossy(key)] = text(value)
        except UnicodeDecodeError:
            out[_lossy(key)] = value
    return out


def json_object(raw: str) -> dict[str, Any]:
    """A stored JSON object; ``ValueError`` when it is anything else."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def stored_field(
    fields: Mapping[str, str], job_id: str, name: str, convert: Callable[[str], T]
) -> T:
    """One field of a stored record, converted; ``InvalidJob`` naming it when missing or bad."""
    raw = fields.get(name)
    if not raw:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record has no field {name!r}; trash it with force",
            field=name,
            job=job_id,
        )
    try:
        return convert(raw)
    except (ValueError, TypeError) as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: stored field {name!r} is corrupt ({err}); trash it with force",
            field=name,
            job=job_id,
        ) from err


def decode_job(job_id: str, raw: Mapping[Any, Any], now: float | None = None) -> Job:
    """Build a Job from its hash; a claim whose lease ended by ``now``, and a scheduled
    job due by ``now``, read as waiting.

    Raises ``InvalidJob`` naming the job and the field when the record is corrupt.
    """
    try:
        fields = (
            raw  # already text (what pairs() makes of a reply)
            if all(type(v) is str for v in raw.values()) and all(type(k) is str for k in raw)
            else {text(k): text(v) for k, v in raw.items()}
        )
    except UnicodeDecodeError as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record is not UTF-8 text ({err})", job=job_id
        ) from err

    def optional(name: str) -> float | None:
        return stored_field(fields, job_id, name, float) if fields.get(name) else None

    result = stored_field(fields, job_id, "result", json.loads) if fields.get("result") else None
    job = Job(
        id=stored_field(fields, job_id, "id", str),
        name=stored_field(fields, job_id, "name", str),
        flow=stored_field(fields, job_id, "flow", str),
        store=stored_field(fields, job_id, "store", json_object),
        priority=stored_field(fields, job_id, "priority", JobPriority),
        state=stored_field(fields, job_id, "state", JobState),
        created_at=stored_field(fields, job_id, "created_at", float),
        updated_at=stored_field(fields, job_id, "updated_at", float),
        seq=stored_field(fields, job_id, "seq", int),
        attempts=stored_field(fields, job_id, "attempts", int),
        max_attempts=stored_field(fields, job_id, "max_attempts", int),
        owner=fields.get("owner") or None,
        token=stored_field(fields, job_id, "token", int),
        claimed_at=optional("claimed_at"),
        lease_expires_at=optional("lease_expires_at"),
        cancel_requested=fields.get("cancel_requested") == "1",
        finished_at=optional("finished_at"),
        result=result,
        last_error=fields.get("last_error") or None,
        details=stored_field(fields, job_id, "details", json_object),
        key=fields.get("key") or None,
        not_before=optional("not_before"),
        parent=fields.get("parent") or None,
    )
    if now is not None and job.state is JobState.CLAIMED and (job.lease_expires_at or 0.0) <= now:
        job = replace(
            job, state=JobState.WAITING, owner=None, claimed_at=None, lease_expires_at=None
        )
    if now is not None and job.state is JobState.SCHEDULED and (job.not_before or 0.0) <= now:
        job = replace(job, state=JobState.WAITING)
    return job


def readable_job(
    job_id: str, raw: Mapping[Any, Any], now: float | None = None, *, where: JobState | None = None
) -> Job:
    """:func:`decode_job`, or for a corrupt record a placeholder marked unreadable
    (see :func:`unreadable_job`): for listings and for the replies of writes that
    took effect, where one bad record must not break the caller."""
    try:
        return decode_job(job_id, raw, now)
    except errors.InvalidJob as err:
        return unreadable_job(job_id, raw, str(err), where)


def unreadable_job(
    job_id: str, raw: Mapping[Any, Any], reason: str, where: JobState | None = None
) -> Job:
    """A stand-in for a job whose record cannot be read: what can be read of it,
    an empty store, and the reason in ``details["unreadable"]`` and ``last_error``.

    Its state is the stored one when that is known, else ``where`` (the index it
    was listed from), else waiting; an operator can trash and purge it by id.
    """
    fields = {_lossy(k): _lossy(v) for k, v in raw.items()}

    def number(name: str, kind: Callable[[str], T], default: T) -> T:
        try:
            return kind(fields.get(name, ""))
        except (TypeError, ValueError):
            return default

    def member(kind: Callable[[str], T], name: str, default: T) -> T:
        try:
            return kind(fields.get(name, ""))
        except ValueError:
            return default

    reason = reason[:_ECHO_LIMIT]
    return Job(
        id=job_id,
        name=fields.get("name", "")[:_ECHO_LIMIT] or "?",
        flow=fields.get("flow", "")[:_ECHO_LIMIT] or "?",
        store={},
        priority=member(JobPriority, "priority", JobPriority.NORMAL),
        state=member(JobState, "state", where or JobState.WAITING),
        created_at=number("created_at", float, 0.0),
        updated_at=number("updated_at", float, 0.0),
        seq=number("seq", int, 0),
        attempts=number("attempts", int, 0),
        max_attempts=number("max_attempts", int, 1),
        owner=fields.get("owner") or None,
        token=number("token", int, 0),
        last_error=f"unreadable record: {reason}",
        details={"unreadable": reason},
    )


def _lossy(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def server_time(reply: tuple[int, int]) -> float:
    """The seconds of a TIME reply."""
    return reply[0] + reply[1] / 1e6
