"""Node layout of a ZooKeeper board and the JSON records its nodes hold.

Under ``<chroot>/<namespace>``::

    jobs/p<rank>+<flow>+<seq>    persistent sequential: the job as posted, never rewritten;
                                 its name is its id and gives priority, flow and post order;
    jobs/p<rank>+<flow>+d<due>+<seq>  the same for a job posted for later: <due> is its
                                 due time in milliseconds (13 digits); it is scheduled until
                                 then and waiting after, with no write in between
    state/<id>                   persistent: token, attempts, last owner and error; created
                                 by the first claim (absent means token 0, attempts 0)
    claims/<id>                  EPHEMERAL: {owner, token, lease}; exists while claimed
    cancel/<id>                  persistent flag: a cancel was requested while claimed
    progress/<id>/a<atom>        persistent: one JSON progress record per atom
    done/<id>                    persistent: the finished job (moved out of jobs/ atomically)
    counters/<event>             persistent, empty: its cversion / 2 counts the event (each
                                 counted transaction creates and deletes a child of it)
    entities/k<kind>/n<name>     EPHEMERAL: a registered participant's metadata
    keys/k<key>                  persistent: the id of the job holding a dedupe key (quoted);
                                 created in the job's own transaction, named right after
    schedules/s<name>            persistent: one record of the schedules' store (quoted);
                                 its ZooKeeper version + 1 is the record's version
    pauses/f<flow>               persistent: a paused flow's note (folder made on first pause)
    waiters/<key>/w-<seq>        EPHEMERAL sequential: an idle board queued for work on a
                                 set of flows; only the first in line watches for work

Everything here is pure: no requests, no board state.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload

from kazoo.protocol.states import ZnodeStat

from jobboard import errors
from jobboard.changes import Ending
from jobboard.model import BoardEvent, Job, JobPriority, JobState

ID_RE = re.compile(
    r"^p([0-4])\+([A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127})\+(?:d(\d{13})\+)?(\d{10,})$"
)
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
#: The folders the local view lists with watches.
VIEW_KINDS = ("jobs", "claims", "cancel")
FOLDERS = (
    "jobs",
    "state",
    "claims",
    "cancel",
    "progress",
    "done",
    "counters",
    "entities",
    "keys",
    "schedules",
    "waiters",
)
#: The event that tells a job ended in each finished state.
FINISH_EVENTS = {
    JobState.COMPLETE: "consumed",
    JobState.FAILED: "failed",
    JobState.TRASHED: "trashed",
    JobState.CANCELLED: "cancelled",
}


def parse_id(job_id: str) -> tuple[int, str, int] | None:
    """(rank, flow, seq) from a job id, or None when it is not one of ours."""
    match = ID_RE.match(job_id)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(4))


def job_prefix(rank: int, flow: str, due: float | None) -> str:
    """The name a job's sequential node is created with (ZooKeeper appends the sequence)."""
    return f"p{rank}+{flow}+" if due is None else f"p{rank}+{flow}+d{round(due * 1000):013d}+"


def due_of(job_id: str) -> float | None:
    """The due time (board seconds) a job posted for later carries in its id, or None."""
    match = ID_RE.match(job_id)
    return None if match is None or match.group(3) is None else int(match.group(3)) / 1000.0


def is_scheduled(job_id: str, now: float | None = None) -> bool:
    """Whether a job (unclaimed) is still scheduled: its due time is after ``now``."""
    if job_id.count("+") < 3:  # a plain id (p<rank>+<flow>+<seq>): never scheduled
        return False
    due = due_of(job_id)
    return due is not None and due > (time.time() if now is None else now)


def id_parts(job_id: str) -> tuple[int, str, int]:
    """(rank, flow, seq) of a job id known to be ours (one the local view listed)."""
    parts = parse_id(job_id)
    if parts is None:
        raise errors.JobNotFound(f"not a job id of this board: {errors.shown(job_id)}")
    return parts


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dump(value: Any) -> bytes:
    """A node's content: compact JSON."""
    return _ENCODER.encode(value).encode()


@overload
def load(raw: bytes, what: str) -> dict[str, Any]: ...
@overload
def load(raw: None, what: str) -> None: ...
def load(raw: bytes | None, what: str) -> dict[str, Any] | None:
    """Decode a stored JSON object; ``InvalidJob`` names the node when it is corrupt."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise errors.InvalidJob(f"stored record {what!r} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise errors.InvalidJob(f"stored record {what!r} is not a JSON object")
    return value


# -- records that do not read ---------------------------------------------------
#
# A node written by hand or by a buggy client must never stop a conductor or a
# listing. The readers below never raise: a record that does not decode or
# does not hold what it must is replaced by a placeholder carrying the reason
# (under ``UNREADABLE``) and the raw text; the first claimant trashes such a
# job, and listings show it with ``details["unreadable"]``.

#: Key of a placeholder record holding why the stored record could not be read.
UNREADABLE = "__unreadable__"
#: Key of a placeholder record holding the stored bytes (as text, capped).
RAW = "__raw__"
#: How much of an unreadable record's bytes the trashed job keeps.
RAW_KEEP = 16 * 1024
_PRIORITIES = tuple(p.value for p in JobPriority)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _static_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with a job node's record, or None."""
    checks: tuple[tuple[str, Callable[[Any], bool]], ...] = (
        ("name", lambda v: isinstance(v, str) and v != ""),
        ("flow", lambda v: isinstance(v, str) and v != ""),
        ("store", lambda v: isinstance(v, dict)),
        ("priority", lambda v: v in _PRIORITIES),
        ("max_attempts", lambda v: _count(v, 1)),
        ("created_at", _number),
    )
    for name, ok in checks:
        if name not in data:
            return f"field {name!r} is missing"
        if not ok(data[name]):
            return f"field {name!r} is invalid: {_shown(data[name])}"
    if not isinstance(data.get("details", {}), dict):
        return f"field 'details' is invalid: {_shown(data['details'])}"
    return None


def _state_problem(data: Mapping[str, Any]) -> str | None:
    for name in ("token", "attempts"):
        if name in data and not _count(data[name]):
            return f"field {name!r} is invalid: {_shown(data[name])}"
    if "token" not in data:
        return "field 'token' is missing"
    return None


def _claim_problem(data: Mapping[str, Any]) -> str | None:
    lease = data.get("lease")
    if lease is not None and not (_number(lease) and lease > 0):
        return f"field 'lease' is invalid: {_shown(lease)}"
    return None


def _read(
    raw: bytes | None, job_id: str, check: Callable[[Mapping[str, Any]], str | None]
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = load(raw, job_id)
    except errors.InvalidJob as err:
        return None, str(err).partition(": ")[2] or str(err)
    if data is None:
        return None, "the node is empty"
    return data, check(data)


def _raw_text(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace")
    return text if len(text) <= RAW_KEEP else text[:RAW_KEEP] + "..."


def read_static(raw: bytes | None, job_id: str) -> dict[str, Any]:
    """A job node's record, or a placeholder naming why it cannot be used."""
    data, problem = _read(raw, job_id, _static_problem)
    if data is not None and problem is None:
        return data
    rank, flow, _ = parse_id(job_id) or (2, "unknown", 0)
    return {
        "name": job_id,
        "flow": flow,
        "store": {},
        "priority": _PRIORITIES[rank],
        "max_attempts": 1,
        "created_at": 0.0,
        "details": {},
        UNREADABLE: f"unreadable job record: {problem}",
        RAW: _raw_text(raw),
    }


def read_state(raw: bytes | None, job_id: str) -> dict[str, Any]:
    """A state node's record, or a placeholder (its token unknown) naming why."""
    data, problem = _read(raw, job_id, _state_problem)
    if data is not None and problem is None:
        return data
    return {"token": 0, "attempts": 0, UNREADABLE: f"unreadable state record: {problem}"}


def read_claim(raw: bytes | None, job_id: str) -> dict[str, Any]:
    """A claim node's record; one that does not read counts as a live claim by an
    unknown owner (it ends with its owner's session)."""
    data, problem = _read(raw, job_id, _claim_problem)
    if data is not None and problem is None:
        return data
    return {"owner": None, "token": None, "lease": None, UNREADABLE: problem}


def read_done(raw: bytes | None, job_id: str) -> Job:
    """A finished job from its ``done`` record; one that does not read is shown as
    trashed, with ``details["unreadable"]`` naming why."""
    data, problem = _read(raw, job_id, lambda d: None)
    if data is not None and problem is None:
        try:
            return Job.from_dict(data)
        except (KeyError, TypeError, ValueError) as err:
            problem = str(err)
    rank, flow, seq = parse_id(job_id) or (2, "unknown", 0)
    reason = f"unreadable finished record: {problem}"
    return Job(
        id=job_id,
        name=job_id,
        flow=flow,
        store={},
        priority=JobPriority(_PRIORITIES[rank]),
        state=JobState.TRASHED,
        seq=seq,
        last_error=reason,
        details={"unreadable": reason},
    )


def unreadable(*records: Mapping[str, Any] | None) -> str | None:
    """Why one of a job's records could not be read, or None when all could."""
    for record in records:
        if record is not None and record.get(UNREADABLE):
            return str(record[UNREADABLE])
    return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything stored about one job, read in one pipelined round trip."""

    job_id: str
    static: dict[str, Any] | None
    state: dict[str, Any] | None
    state_version: int | None
    claim: dict[str, Any] | None
    claim_stat: ZnodeStat | None
    cancel: bool
    done: Job | None


@dataclass(frozen=True, slots=True)
class Fence:
    """What a fenced write checks: the versions our claim left on the state and claim nodes."""

    owner: str | None
    token: int
    state_version: int | None
    claim_version: int | None
    static: dict[str, Any]
    state: dict[str, Any]
    lease: float | None = None
    #: Server time when the lease ends (None: session-bound, or not known).
    lease_end: float | None = None


def expiry(claim: Mapping[str, Any] | None, stat: ZnodeStat | None) -> float | None:
    """Board time when a leased claim runs out (None for session-bound claims)."""
    if claim is None or stat is None or claim.get("lease") is None:
        return None
    return float(stat.mtime) / 1000.0 + float(claim["lease"])


def is_live(
    claim: Mapping[str, Any] | None, stat: ZnodeStat | None, now: float | None = None
) -> bool:
    """Whether a claim node's claim holds at server time ``now`` (a lapsed lease does not)."""
    if claim is None:
        return False
    ends = expiry(claim, stat)
    return ends is None or ends > (time.time() if now is None else now)


def active_job(
    job_id: str,
    static: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    claim: Mapping[str, Any] | None,
    claim_stat: ZnodeStat | None,
    cancel: bool,
    now: float | None = None,
) -> Job:
    """The unfinished Job its job, state and claim nodes describe at server time ``now``."""
    _, _, seq = parse_id(job_id) or (0, "", 0)
    state = state or {}
    live = is_live(claim, claim_stat, now)
    idle = JobState.SCHEDULED if is_scheduled(job_id) else JobState.WAITING
    problem = unreadable(static, state)
    details = static.get("details", {})
    if problem is not None:
        details = {**details, "unreadable": problem} if isinstance(details, dict) else {}
    try:
        return Job(
            id=job_id,
            name=static["name"],
            flow=static["flow"],
            store=static["store"],
            priority=JobPriority(static["priority"]),
            state=JobState.CLAIMED if live else idle,
            created_at=static["created_at"],
            updated_at=state.get("updated_at", static["created_at"]),
            seq=seq,
            attempts=state.get("attempts", 0),
            max_attempts=static["max_attempts"],
            owner=claim["owner"] if live and claim else None,
            token=state.get("token", 0),
            claimed_at=state.get("claimed_at") if live else None,
            lease_expires_at=expiry(claim, claim_stat) if live else None,
            cancel_requested=cancel,
            last_error=problem or state.get("last_error"),
            details=details,
            key=static.get("key"),
            not_before=due_of(job_id),
            parent=static.get("parent"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record is corrupt ({err!r}); trash it with force",
            job=job_id,
        ) from err


def finish_record(job: Job, end: Ending) -> dict[str, Any]:
    """The ``done/<id>`` record of a job ending now as ``end`` says."""
    ended = end.apply(job, time.time())
    # Job.to_dict without its deep copy of store, result and details: encoded at once
    done = {name: getattr(ended, name) for name in _JOB_FIELDS}
    done["priority"] = ended.priority.value
    done["state"] = ended.state.value
    done["finished_by"] = end.who
    done["forced"] = end.force
    return done


_JOB_FIELDS = tuple(Job.__dataclass_fields__)


def node_event(where: str, job_id: str, data: Mapping[str, Any]) -> BoardEvent:
    """The event a watched node tells: a new ``claims`` node, a ``done`` record, or
    a ``state`` node left by an ended claim (released, or lapsed)."""
    if where == "claims":
        return BoardEvent(
            "claimed", job_id, {"token": data.get("token"), "owner": data.get("owner")}
        )
    if where == "done":
        kind = FINISH_EVENTS.get(JobState(data.get("state", "complete")), "consumed")
        return BoardEvent(
            kind,
            job_id,
            {
                "token": data.get("token"),
                "owner": data.get("finished_by"),
                "forced": data.get("forced", False),
                "flow": data.get("flow"),
            },
        )
    if data.get("owner") is None:
        return BoardEvent(
            "abandoned",
            job_id,
            {
                "token": data.get("token"),
                "owner": data.get("released_by"),
                "forced": data.get("forced", False),
            },
        )
    return BoardEvent("expired", job_id, {"token": data.get("token"), "owner": data.get("owner")})
