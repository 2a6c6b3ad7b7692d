"""Node layout of a ZooKeeper board and the JSON records its nodes hold.

Under ``<chroot>/<namespace>``::

    jobs/p<rank>+<flow>+<seq>    persistent sequential: the job as posted, never rewritten;
                                 its name is its id and gives priority, flow and post order
    state/<id>                   persistent: token, attempts, last owner and error; created
                                 by the first claim (absent means token 0, attempts 0)
    claims/<id>                  EPHEMERAL: {owner, token, lease}; exists while claimed
    cancel/<id>                  persistent flag: a cancel was requested while claimed
    progress/<id>/a<atom>        persistent: one JSON progress record per atom
    done/<id>                    persistent: the finished job (moved out of jobs/ atomically)
    counters/<board-instance>    persistent: one board instance's event counts (summed on read)
    entities/k<kind>/n<name>     EPHEMERAL: a registered participant's metadata
    pauses/f<flow>               persistent: a paused flow's note (folder made on first pause)

Everything here is pure: no requests, no board state.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload

from kazoo.protocol.states import ZnodeStat

from jobboard import errors
from jobboard.changes import Ending
from jobboard.model import BoardEvent, Job, JobPriority, JobState

ID_RE = re.compile(r"^p([0-4])\+([A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127})\+(\d{10,})$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
#: The folders the local view lists with watches.
VIEW_KINDS = ("jobs", "claims", "cancel")
FOLDERS = ("jobs", "state", "claims", "cancel", "progress", "done", "counters", "entities")
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
    return int(match.group(1)), match.group(2), int(match.group(3))


def id_parts(job_id: str) -> tuple[int, str, int]:
    """(rank, flow, seq) of a job id known to be ours (one the local view listed)."""
    parts = parse_id(job_id)
    if parts is None:
        raise errors.JobNotFound(f"not a job id of this board: {job_id!r}")
    return parts


def dump(value: Any) -> bytes:
    """A node's content: compact JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


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
    done: dict[str, Any] | None


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


def expiry(claim: Mapping[str, Any] | None, stat: ZnodeStat | None) -> float | None:
    """Board time when a leased claim runs out (None for session-bound claims)."""
    if claim is None or stat is None or claim.get("lease") is None:
        return None
    return float(stat.mtime) / 1000.0 + float(claim["lease"])


def is_live(claim: Mapping[str, Any] | None, stat: ZnodeStat | None) -> bool:
    """Whether a claim node's claim holds now (a lapsed lease does not)."""
    if claim is None:
        return False
    ends = expiry(claim, stat)
    return ends is None or ends > time.time()


def active_job(
    job_id: str,
    static: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    claim: Mapping[str, Any] | None,
    claim_stat: ZnodeStat | None,
    cancel: bool,
) -> Job:
    """The unfinished Job its job, state and claim nodes describe."""
    _, _, seq = parse_id(job_id) or (0, "", 0)
    state = state or {}
    live = is_live(claim, claim_stat)
    try:
        return Job(
            id=job_id,
            name=static["name"],
            flow=static["flow"],
            store=static["store"],
            priority=JobPriority(static["priority"]),
            state=JobState.CLAIMED if live else JobState.WAITING,
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
            last_error=state.get("last_error"),
            details=static.get("details", {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record is corrupt ({err!r}); trash it with force",
            job=job_id,
        ) from err


def finish_record(job: Job, end: Ending) -> dict[str, Any]:
    """The ``done/<id>`` record of a job ending now as ``end`` says."""
    done = end.apply(job, time.time()).to_dict()
    done["finished_by"] = end.who
    done["forced"] = end.force
    return done


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
