"""What a claimed job is doing now: its running tasks, "task N of M" and their progress.

A conductor saves one ``RUNNING`` progress record per running task (see
``conductor/board_progress.py``): the task's place in its flow
(``task_number`` of ``task_count``), when it started and its latest report
(``progress``: fraction, message, details, ``updated_at``), stamped with the
claim's ``token``. A record stamped with an older token than the job's
current one is a leftover of an earlier claim and is ignored, and only a
claimed job has running tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobboard.admin.records import mapping
from jobboard.admin.text import fmt_duration
from jobboard.model import Job, JobState

__all__ = ["running_line", "running_tasks", "running_view"]

#: The progress-record state of a task that is running now.
RUNNING = "RUNNING"


def _number(value: Any) -> float | None:
    """A JSON number, or ``None`` for anything else (records may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None or number < 0 else int(number)


def running_tasks(job: Job, progress: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    """The running tasks of ``job`` (``show --json`` schema, ``running`` items), first started first.

    Empty unless the job is claimed; records of an earlier claim (a lower
    token) are skipped.
    """
    if job.state is not JobState.CLAIMED:
        return []
    out = []
    for name, raw in progress.items():
        record = mapping(raw)
        if str(record.get("state", "")).upper() != RUNNING:
            continue
        metadata = mapping(record.get("metadata"))
        token = _count(metadata.get("token"))
        if token is not None and token < job.token:
            continue
        report = mapping(record.get("progress"))
        started = _number(metadata.get("started_at"))
        updated = _number(report.get("updated_at"))
        fraction = _number(report.get("fraction"))
        message = report.get("message")
        out.append(
            {
                "task": str(name),
                "task_number": _count(record.get("task_number")),
                "task_count": _count(record.get("task_count")),
                "fraction": fraction,
                "message": message if isinstance(message, str) else None,
                "details": dict(mapping(report.get("details"))),
                "started_at": started,
                "running_for": None if started is None else max(0.0, now - started),
                "updated_at": updated,
                "progress_age": None if updated is None else max(0.0, now - updated),
                "conductor": metadata.get("conductor"),
                "token": token,
            }
        )
    out.sort(key=lambda t: (t["started_at"] is None, t["started_at"] or 0.0, t["task"]))
    return out


def running_view(board: Any, jobs: Sequence[Job], now: float) -> dict[str, list[dict[str, Any]]]:
    """``{job id: running tasks}`` for the claimed ones of ``jobs`` (one progress read each)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job.state is not JobState.CLAIMED:
            continue
        try:
            progress = board.load_progress(job)
        except Exception:  # noqa: BLE001 - a job purged or unreadable since the listing
            continue
        out[job.id] = running_tasks(job, progress, now)
    return out


def running_line(tasks: Sequence[Mapping[str, Any]]) -> str:
    """One phrase for a listing cell: ``task 2 of 5 resize 40% "tile 3" (2.1s ago)``."""
    if not tasks:
        return ""
    task = tasks[0]
    parts = []
    if task["task_number"] is not None and task["task_count"] is not None:
        parts.append(f"task {task['task_number']} of {task['task_count']}")
    parts.append(task["task"])
    if task["fraction"] is not None:
        parts.append(f"{task['fraction'] * 100:.0f}%")
    if task["message"]:
        parts.append(f'"{task["message"]}"')
    if task["progress_age"] is not None:
        parts.append(f"({fmt_duration(task['progress_age'])} ago)")
    elif task["running_for"] is not None:
        parts.append(f"(running {fmt_duration(task['running_for'])})")
    if len(tasks) > 1:
        parts.append(f"+{len(tasks) - 1} more")
    return " ".join(parts)
