"""One read of a board, shared by the dashboard, its API and the metrics.

:class:`BoardReader` walks the board's jobs once (``iterjobs`` over every
state) and its conductors once (``iter_entities``) and builds a
:class:`Snapshot`: per-flow counts and rates, conductors (live or stale) with
the jobs they run, claims with their task progress and lease, the head of the
waiting queue and the latest finished jobs. Reads are serialised and a
snapshot younger than ``min_age`` seconds is reused, so many browsers and a
Prometheus scrape cost one board read, not one each.

Rates come from the jobs' own timestamps (posted, finished) over the last
``RATE_WINDOW`` seconds, so they are right from the first read and do not
depend on which events reached this process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# render: the admin tool's views (claim, conductor and task records), shared with the CLI.
from jobboard import errors
from jobboard.admin import render
from jobboard.base import Entity, Job, JobBoard, JobState

__all__ = ["BoardReader", "Snapshot", "job_summary", "links_of", "running_task"]

log = logging.getLogger(__name__)

#: Job states in display order.
STATES = tuple(s.value for s in JobState)
#: Keys of a job's ``details`` (or store) naming the job it was made from.
PARENT_KEYS = ("parent", "parent_id", "parent_job", "retry_of")
#: Keys of a job's ``details`` (or store) listing jobs it made.
CHILDREN_KEYS = ("children", "child_jobs", "child_ids")
#: Progress-record states of tasks that are done (the engine's atom states).
DONE_STATES = frozenset({"SUCCESS", "FAILURE", "REVERTED", "REVERT_FAILURE", "IGNORE"})


def job_summary(job: Job) -> dict[str, Any]:
    """What lists show of a job: never its store or result."""
    error = job.last_error
    return {
        "id": job.id,
        "name": job.name,
        "flow": job.flow,
        "state": job.state.value,
        "priority": job.priority.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "owner": job.owner,
        "created_at": job.created_at,
        "claimed_at": job.claimed_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "last_error": None if error is None else render.cut(error, 300),
    }


def _ids(value: Any) -> list[str]:
    """Job ids from a details value: one id, a list of ids, or dicts holding an ``id``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("id") or item.get("job")
        if isinstance(item, str) and item:
            out.append(item)
    return out


def links_of(job: Job) -> tuple[list[str], list[str]]:
    """The parent ids and child ids a job's details (or store) name, in that order."""
    parents: list[str] = []
    children: list[str] = []
    for source in (job.details, job.store):
        if not isinstance(source, Mapping):
            continue
        for key in PARENT_KEYS:
            parents += [i for i in _ids(source.get(key)) if i not in parents and i != job.id]
        for key in CHILDREN_KEYS:
            children += [i for i in _ids(source.get(key)) if i not in children and i != job.id]
    return parents, children


def running_task(progress: Mapping[str, Any], job: Job) -> dict[str, Any]:
    """Where a claimed job is: its running task when known, tasks done, and of how many.

    The board holds the records of finished tasks; a record in state
    ``RUNNING`` names the running task, else the last finished task is given
    (the one that runs is the next). The total comes from the job's details
    (``tasks``: a count or a list of names) when the producer put it there.
    """
    tasks = render.progress_records(progress)
    done = [t for t in tasks if str(t["state"]).upper() in DONE_STATES]
    running = next((t["task"] for t in tasks if str(t["state"]).upper() == "RUNNING"), None)
    total = job.details.get("tasks") if isinstance(job.details, Mapping) else None
    if isinstance(total, list):
        total = len(total)
    if isinstance(total, bool) or not isinstance(total, int):
        total = None
    return {
        "running": running,
        "last_done": done[-1]["task"] if done else None,
        "done": len(done),
        "total": total,
        "failed": sum(1 for t in done if t["error"]),
    }


@dataclass
class Snapshot:
    """The board as one read saw it (a JSON-ready ``doc`` plus indexes for lookups)."""

    at: float
    doc: dict[str, Any]
    #: job id -> (flow, name, state value) of every job the read saw.
    jobs: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: job id -> ids of the jobs naming it as their parent (or retried from it).
    children: dict[str, list[str]] = field(default_factory=dict)


class BoardReader:
    """Reads a board into :class:`Snapshot` documents, cached for ``min_age`` seconds."""

    #: Window of the per-flow rates (seconds).
    RATE_WINDOW: ClassVar[float] = 300.0
    #: A conductor whose heartbeat is older than this is shown stale (three missed
    #: refreshes at the conductor's default 5 s registration refresh).
    STALE_AFTER: ClassVar[float] = 15.0
    #: Claims whose task progress is read per snapshot (one ``load_progress`` each).
    MAX_CLAIM_DETAILS: ClassVar[int] = 25
    #: Waiting and recently finished jobs listed on the dashboard.
    LIST_LIMIT: ClassVar[int] = 25
    #: Claims held longer than this are flagged ``long`` (as ``jobboard claims`` does).
    LONG_CLAIM: ClassVar[float] = 3600.0

    def __init__(
        self,
        board: JobBoard,
        *,
        label: str = "",
        min_age: float = 0.5,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.label = label
        self.min_age = min_age
        self.stale_after = self.STALE_AFTER if stale_after is None else stale_after
        self.clock = clock
        self._lock = threading.Lock()
        self._last: Snapshot | None = None
        self._read_at = -float("inf")  # monotonic time of the last read

    @property
    def last(self) -> Snapshot | None:
        """The latest snapshot read, if any (never reads the board)."""
        return self._last

    def read(self, *, max_age: float | None = None) -> Snapshot:
        """A snapshot at most ``max_age`` (default ``min_age``) seconds old; reads when older."""
        limit = self.min_age if max_age is None else max_age
        with self._lock:
            if self._last is not None and time.monotonic() - self._read_at <= limit:
                return self._last
            snapshot = self._read()
            self._last, self._read_at = snapshot, time.monotonic()
            return snapshot

    # -- the read -----------------------------------------------------------

    def _read(self) -> Snapshot:
        jobs = list(self.board.iterjobs(states=list(JobState)))
        entities = self.board.iter_entities()
        now = self.clock()
        flows = self._flows(jobs, entities, now)
        claims = self._claims(jobs, entities, now)
        conductors = self._conductors(entities, claims, now)
        for row in flows:
            row["conductors_live"] = sum(
                1 for c in conductors if not c["stale"] and row["flow"] in c["flows"]
            )
            row["conductors_stale"] = sum(
                1 for c in conductors if c["stale"] and row["flow"] in c["flows"]
            )
        totals = dict.fromkeys(STATES, 0)
        for job in jobs:
            totals[job.state.value] += 1
        waiting = [j for j in jobs if j.state is JobState.WAITING]  # claim order already
        finished = sorted(
            (j for j in jobs if j.state.finished), key=lambda j: -(j.finished_at or 0.0)
        )
        children: dict[str, list[str]] = {}
        for job in jobs:
            for parent in links_of(job)[0]:
                children.setdefault(parent, []).append(job.id)
        doc = {
            "board": self.label,
            "now": now,
            "rate_window": self.RATE_WINDOW,
            "stale_after": self.stale_after,
            "totals": totals,
            "flows": flows,
            "conductors": conductors,
            "claims": claims,
            "waiting": [job_summary(j) for j in waiting[: self.LIST_LIMIT]],
            "waiting_total": len(waiting),
            "recent": [job_summary(j) for j in finished[: self.LIST_LIMIT]],
        }
        index = {j.id: (j.flow, j.name, j.state.value) for j in jobs}
        return Snapshot(at=now, doc=doc, jobs=index, children=children)

    def _flows(self, jobs: Iterable[Job], entities: list[Entity], now: float) -> list[dict[str, Any]]:
        """One row per flow seen in jobs or served by a conductor."""
        since = now - self.RATE_WINDOW
        per_minute = 60.0 / self.RATE_WINDOW
        rows: dict[str, dict[str, Any]] = {}

        def row(flow: str) -> dict[str, Any]:
            if flow not in rows:
                rows[flow] = {
                    "flow": flow,
                    **dict.fromkeys(STATES, 0),
                    "oldest_waiting_age": None,
                    "posted_recent": 0,
                    "completed_recent": 0,
                    "failed_recent": 0,
                }
            return rows[flow]

        for entity in entities:
            for flow in render.conductor_record(entity, now)["flows"]:
                row(str(flow))
        for job in jobs:
            r = row(job.flow)
            r[job.state.value] += 1
            if job.state is JobState.WAITING:
                age = max(0.0, now - job.created_at)
                if r["oldest_waiting_age"] is None or age > r["oldest_waiting_age"]:
                    r["oldest_waiting_age"] = age
            if job.created_at >= since:
                r["posted_recent"] += 1
            if job.finished_at is not None and job.finished_at >= since:
                if job.state is JobState.COMPLETE:
                    r["completed_recent"] += 1
                elif job.state in (JobState.FAILED, JobState.TRASHED):
                    r["failed_recent"] += 1
        for r in rows.values():
            r["rates"] = {
                "posted": r["posted_recent"] * per_minute,
                "completed": r["completed_recent"] * per_minute,
                "failed": r["failed_recent"] * per_minute,
            }
        return [rows[f] for f in sorted(rows)]

    def _claims(self, jobs: Iterable[Job], entities: list[Entity], now: float) -> list[dict[str, Any]]:
        """Claim records, oldest claim first, with the running task of the first few."""
        claimed = [j for j in jobs if j.state is JobState.CLAIMED]
        records = []
        for job in claimed:
            record = render.claim_record(job, now, entities, self.LONG_CLAIM)
            record["task"] = None
            records.append((record, job))
        records.sort(key=lambda pair: -(pair[0]["age"] or 0.0))
        for record, job in records[: self.MAX_CLAIM_DETAILS]:
            try:
                record["task"] = running_task(self.board.load_progress(job), job)
            except errors.JobNotFound:  # finished and purged since the listing
                continue
        return [record for record, _ in records]

    def _conductors(
        self, entities: list[Entity], claims: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        """Conductor records with a ``stale`` flag and the claims each one holds."""
        out = []
        for entity in entities:
            record = render.conductor_record(entity, now)
            record["stale"] = record["heartbeat_age"] > self.stale_after
            record["status"] = "stale" if record["stale"] else "live"
            mine = [c for c in claims if render.owner_known(c["owner"], [entity])]
            record["jobs"] = [
                {"id": c["job"], "name": c["name"], "flow": c["flow"], "task": c["task"]}
                for c in mine
            ]
            record["display_name"] = str(entity.metadata.get("name") or entity.name)
            out.append(record)
        out.sort(key=lambda c: (c["stale"], c["display_name"], c["name"]))
        return out
