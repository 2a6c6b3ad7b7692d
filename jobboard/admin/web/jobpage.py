"""The document behind a job's page: fields, masked store, attempts, links, timeline.

The timeline is drawn from the execution records that conductors save with
each task's progress (``load_progress``): when each task ran and its phases
(input transform, the task itself, result transform), on which host, by which
conductor and under which claim. The claim's fencing token tells attempts
apart: every claim of a job has a larger token than the ones before, so the
n-th distinct token seen in the records is the n-th attempt that saved work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobboard.admin import render  # the admin tool's views (task and claim records)
from jobboard.admin.web.masking import mask
from jobboard.admin.web.snapshot import BoardReader, Snapshot, job_summary, links_of
from jobboard.base import Job, JobBoard, JobState

__all__ = ["job_document", "timeline"]

#: The phases drawn inside a task's bar: (name, start key, end key).
PHASES = (
    ("input", "input_transform_start_time", "input_transform_end_time"),
    ("task", "task_start_time", "task_end_time"),
    ("result", "result_transform_start_time", "result_transform_end_time"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _bar(name: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """One task's bar: its span, phases, who ran it and how it ended; ``None`` if never run."""
    task = render.task_record(name, record)
    times = task["execution"] or {}
    start = next(
        (
            times[k]
            for k in ("execution_start_time", "task_start_time", "submit_time")
            if times.get(k)
        ),
        None,
    )
    end = next(
        (
            times[k]
            for k in ("execution_end_time", "task_end_time", "received_time")
            if times.get(k)
        ),
        None,
    )
    if start is None:
        return None
    raw = record.get("metadata")
    metadata: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    execution = render.execution_of(record)
    token = metadata.get("token")
    retries = execution.get("attempt")
    return {
        "task": name,
        "state": task["state"],
        "success": task["success"],
        "start": start,
        "end": end if end is not None and end >= start else None,
        "phases": [
            {"name": phase, "start": times.get(a), "end": times.get(b)}
            for phase, a, b in PHASES
            if times.get(a) and times.get(b)
        ],
        "host": task["host"],
        "conductor": metadata.get("conductor") or task["conductor"],
        "owner": metadata.get("owner"),
        "token": token if isinstance(token, int) and not isinstance(token, bool) else None,
        "try": retries if isinstance(retries, int) and not isinstance(retries, bool) else 1,
        "error": task["error"],
        "durations": task["durations"],
    }


def timeline(job: Job, progress: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The Gantt chart of a job: one bar per task run, attempts numbered by claim token."""
    bars = [b for b in (_bar(n, r) for n, r in progress.items() if isinstance(r, Mapping)) if b]
    bars.sort(key=lambda b: (b["start"], b["task"]))
    tokens = sorted({b["token"] for b in bars if b["token"] is not None})
    attempt_of = {token: i + 1 for i, token in enumerate(tokens)}
    for bar in bars:
        bar["attempt"] = attempt_of.get(bar["token"])
    conductors = []
    for bar in bars:
        who = bar["conductor"] or bar["owner"] or bar["host"]
        if who and who not in conductors:
            conductors.append(who)
    ends = [b["end"] or b["start"] for b in bars]
    start = min([b["start"] for b in bars] + [job.created_at or now])
    end = max(ends + [job.finished_at or 0.0, job.claimed_at or 0.0])
    if not job.state.finished:
        end = max(end, now)
    running = None
    if job.state is JobState.CLAIMED and job.claimed_at is not None:
        # The task running now has no record yet: an open bar from the claim (or the
        # end of this claim's last finished task) until now.
        if job.token not in attempt_of:
            attempt_of[job.token] = len(attempt_of) + 1
            tokens.append(job.token)
        mine = [b["end"] or b["start"] for b in bars if b["token"] == job.token]
        owner = job.owner or ""
        running = {
            "start": max([job.claimed_at, *mine]),
            "end": now,
            "conductor": owner.split("@", 1)[0] or None,
            "owner": owner,
            "attempt": attempt_of[job.token],
            "token": job.token,
        }
        if running["conductor"] and running["conductor"] not in conductors:
            conductors.append(running["conductor"])
    markers = [
        {"kind": "posted", "at": _number(job.created_at)},
        {"kind": "claimed", "at": _number(job.claimed_at)},
        {"kind": job.state.value, "at": _number(job.finished_at)},
    ]
    return {
        "start": start,
        "end": max(end, start),
        "bars": bars,
        "conductors": conductors,
        "attempts": [{"attempt": attempt_of[t], "token": t} for t in tokens],
        "markers": [m for m in markers if m["at"] is not None],
        "running": running,
    }


def job_document(board: JobBoard, reader: BoardReader, job_id: str) -> dict[str, Any]:
    """Everything the job page shows; secrets in the store, result and details masked.

    Raises ``JobNotFound`` when the board has no such job.
    """
    job = board.get(job_id)
    now = reader.clock()
    progress = board.load_progress(job)
    snapshot: Snapshot | None = reader.last
    parents, children = links_of(job)
    if snapshot is not None:
        children += [c for c in snapshot.children.get(job.id, []) if c not in children]

    def link(other: str) -> dict[str, Any]:
        known = snapshot.jobs.get(other) if snapshot is not None else None
        if known is None:
            return {"id": other, "name": None, "flow": None, "state": None}
        flow, name, state = known
        return {"id": other, "name": name, "flow": flow, "state": state}

    claim = None
    if job.state is JobState.CLAIMED:
        claim = render.claim_record(job, now, board.iter_entities(), reader.LONG_CLAIM)
    tasks = []
    for task in render.progress_records(progress):
        task["result"] = mask(task["result"])
        tasks.append(task)
    return {
        "now": now,
        "job": {
            **job_summary(job),
            "last_error": job.last_error,
            "token": job.token,
            "seq": job.seq,
            "updated_at": job.updated_at,
            "lease_expires_at": job.lease_expires_at,
            "store": mask(job.store),
            "result": mask(job.result),
            "details": mask(job.details),
        },
        "claim": claim,
        "parents": [link(p) for p in parents],
        "children": [link(c) for c in children],
        "tasks": tasks,
        "timeline": timeline(job, progress, now),
    }
