"""Naming jobs on the command line: short unique ids in listings, and finding a job back.

Job ids differ by backend: 32 hex digits (memory, SQLite, Redis) or
``p<priority>+<flow>+<sequence>`` (ZooKeeper), where every job of a flow
shares a long prefix. A fixed-width cut would make those ids look alike, so a
listing shows each id by its shortest prefix that no other id of the listing
shares (never shorter than :data:`SHORT_ID_MIN`). Commands accept a full id,
any unique prefix of one, or a job name that only one job has.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobboard import errors
from jobboard.model import Job

__all__ = ["MIN_PREFIX", "SHORT_ID_MIN", "AmbiguousJob", "resolve_job", "short_ids"]

#: Shortest id shown in a listing (when the ids differ sooner).
SHORT_ID_MIN = 8
#: Shortest id prefix accepted in place of a full id.
MIN_PREFIX = 4
#: Candidates named in an "ambiguous" error.
MAX_CANDIDATES = 5


class AmbiguousJob(errors.BoardError):
    """Raised when a prefix or a name matches more than one job (the message lists some)."""


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def short_ids(ids: Iterable[str], minimum: int = SHORT_ID_MIN) -> dict[str, str]:
    """``{id: its shortest prefix that no other of ids starts with}``, at least ``minimum`` long.

    An id that is a prefix of another is shown whole.
    """
    ordered = sorted(set(ids))
    out = {}
    for i, job_id in enumerate(ordered):
        shared = 0
        if i > 0:
            shared = max(shared, _common(job_id, ordered[i - 1]))
        if i + 1 < len(ordered):
            shared = max(shared, _common(job_id, ordered[i + 1]))
        out[job_id] = job_id[: max(minimum, shared + 1)]
    return out


def _candidates(jobs: list[Job]) -> str:
    shown = ", ".join(f"{j.id} ({j.name!r}, {j.state})" for j in jobs[:MAX_CANDIDATES])
    more = len(jobs) - MAX_CANDIDATES
    return shown + (f" and {more} more" if more > 0 else "")


def resolve_job(ref: str, jobs: Iterable[Job]) -> Job:
    """The one job of ``jobs`` that ``ref`` names: by id prefix first, then by name.

    Raises ``JobNotFound`` when nothing matches and :class:`AmbiguousJob`,
    listing candidates, when several do.
    """
    jobs = list(jobs)
    by_id = [j for j in jobs if j.id == ref]
    if by_id:
        return by_id[0]
    if len(ref) >= MIN_PREFIX:
        prefixed = [j for j in jobs if j.id.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if prefixed:
            raise AmbiguousJob(
                f"job id prefix {ref!r} is ambiguous, it matches {len(prefixed)} jobs: "
                f"{_candidates(prefixed)}; give more characters"
            )
    named = [j for j in jobs if j.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        named.sort(key=lambda j: -j.created_at)
        raise AmbiguousJob(
            f"job name {ref!r} is ambiguous, {len(named)} jobs have it: {_candidates(named)}; "
            "give the job's id"
        )
    raise errors.JobNotFound(f"no job with id, id prefix or name {ref!r} on the board")
