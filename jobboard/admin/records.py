"""The records the admin tool prints with ``--json``: jobs' tasks, claims, conductors.

Each function turns board objects (or the JSON a conductor saved as progress)
into plain dicts whose schema docs/admin.md documents. Saved records may hold
anything, so every field is read defensively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jobboard.admin.text import compact_json

__all__ = [
    "EXECUTION_TIMES",
    "PHASES",
    "STATE_ORDER",
    "claim_record",
    "conductor_record",
    "error_text",
    "execution_of",
    "export_records",
    "mapping",
    "owner_known",
    "progress_records",
    "task_record",
    "timestamp",
]

#: The timestamps of an execution record, in the order they happen.
EXECUTION_TIMES = (
    "submit_time",
    "received_time",
    "execution_start_time",
    "input_transform_start_time",
    "input_transform_end_time",
    "task_start_time",
    "task_end_time",
    "result_transform_start_time",
    "result_transform_end_time",
    "execution_end_time",
)
#: The phases of a task execution: (name, start key, end key).
PHASES = (
    ("input_transform", "input_transform_start_time", "input_transform_end_time"),
    ("task", "task_start_time", "task_end_time"),
    ("result_transform", "result_transform_start_time", "result_transform_end_time"),
    ("total", "execution_start_time", "execution_end_time"),
)
#: Job states in the order the tool lists them.
STATE_ORDER = ("waiting", "scheduled", "claimed", "complete", "failed", "trashed", "cancelled")


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (records may hold anything)."""
    return value if isinstance(value, Mapping) else {}


def timestamp(value: Any) -> float | None:
    """A timestamp of an execution record; 0 (a phase never reached) counts as missing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def execution_of(record: Any) -> dict[str, Any]:
    """The execution record of a progress record, flattened; ``{}`` when there is none.

    Accepts the engine's flat record and a task-info record that nests the
    timing under a second ``execution`` key.
    """
    flat = dict(mapping(mapping(record).get("execution")))
    nested = flat.pop("execution", None)
    if isinstance(nested, Mapping):
        for key, value in nested.items():
            flat.setdefault(key, value)
    return flat


def error_text(value: Any) -> str | None:
    """One line describing a failure or exception record (a string or a dict), or ``None``."""
    if value is None or value is False or value == {}:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        return str(value)
    message = next(
        (
            value[k]
            for k in ("exception_str", "message", "error", "exception", "str", "reason")
            if isinstance(value.get(k), str) and value[k]
        ),
        None,
    )
    kind = next(
        (
            value[k]
            for k in ("exc_type", "exception_type", "type", "exc_type_names")
            if value.get(k)
        ),
        None,
    )
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind and message and not message.startswith(str(kind)):
        return f"{kind}: {message}"
    return message or (str(kind) if kind else compact_json(value))


def task_record(name: str, record: Any) -> dict[str, Any]:
    """One task's progress as the tool reports it (``show --json`` schema, ``progress`` items)."""
    record = mapping(record)
    execution = execution_of(record)
    metadata = mapping(record.get("metadata"))
    durations = {}
    for phase, start, end in PHASES:
        a, b = timestamp(execution.get(start)), timestamp(execution.get(end))
        durations[phase] = None if a is None or b is None else b - a
    starts = (
        timestamp(execution.get(k))
        for k in ("execution_start_time", "task_start_time", "submit_time")
    )
    started = next((t for t in starts if t is not None), None)
    error = error_text(record.get("failure")) or error_text(execution.get("exception"))
    success = execution.get("success")
    if not isinstance(success, bool):
        success = None
    return {
        "task": name,
        "state": record.get("state"),
        "host": execution.get("hostname") or execution.get("host"),
        "start": started,
        "durations": durations,
        "success": success,
        "result": record.get("result"),
        "error": error,
        "conductor": metadata.get("owner") or metadata.get("conductor"),
        "execution": {k: timestamp(execution.get(k)) for k in EXECUTION_TIMES}
        if execution
        else None,
    }


def progress_records(progress: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every task of a job's progress, in the order they started (never-started ones last)."""
    tasks = [task_record(name, record) for name, record in progress.items()]
    tasks.sort(key=lambda t: (t["start"] is None, t["start"] or 0.0, t["task"]))
    return tasks


def export_records(job: Any, progress: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat record per task execution of ``job`` (the ``export`` JSON lines schema)."""
    out = []
    for task in progress_records(progress):
        if task["execution"] is None:
            continue
        out.append(
            {
                "job": job.id,
                "job_name": job.name,
                "flow": job.flow,
                "job_state": str(job.state),
                "task": task["task"],
                "state": task["state"],
                "conductor": task["conductor"],
                "host": task["host"],
                **task["execution"],
                "durations": task["durations"],
                "success": task["success"],
                "error": task["error"],
            }
        )
    return out


def owner_known(owner: str | None, entities: Iterable[Any]) -> bool:
    """Whether a claim's owner is one of the registered conductors.

    An owner matches an entity named like it, an entity whose name is the
    owner's part before ``@`` (owners made by ``unique_owner``), or one whose
    metadata lists it under ``owner`` / ``owners``.
    """
    if not owner:
        return False
    base = owner.split("@", 1)[0]
    for entity in entities:
        meta = mapping(entity.metadata)
        owners = meta.get("owners")
        if not isinstance(owners, list):
            owners = []
        if owner in (entity.name, meta.get("owner")) or owner in owners or base == entity.name:
            return True
    return False


def claim_record(
    job: Any, now: float, entities: Sequence[Any], long_after: float
) -> dict[str, Any]:
    """A claimed job as the ``claims`` listing reports it, with its warning flags.

    Flags: ``expired`` (lease left <= 0), ``unknown-owner`` (not a registered
    conductor), ``long`` (claimed for ``long_after`` seconds or more),
    ``cancel-requested``.
    """
    lease_left = None if job.lease_expires_at is None else job.lease_expires_at - now
    age = None if job.claimed_at is None else now - job.claimed_at
    flags = []
    if lease_left is not None and lease_left <= 0:
        flags.append("expired")
    if not owner_known(job.owner, entities):
        flags.append("unknown-owner")
    if age is not None and age >= long_after:
        flags.append("long")
    if job.cancel_requested:
        flags.append("cancel-requested")
    return {
        "job": job.id,
        "name": job.name,
        "flow": job.flow,
        "owner": job.owner,
        "token": job.token,
        "attempts": job.attempts,
        "claimed_at": job.claimed_at,
        "age": age,
        "lease_expires_at": job.lease_expires_at,
        "lease_left": lease_left,
        "cancel_requested": job.cancel_requested,
        "flags": flags,
        "suspicious": bool(flags),
    }


def conductor_record(entity: Any, now: float) -> dict[str, Any]:
    """A registered conductor as the ``conductors`` listing reports it."""
    meta = mapping(entity.metadata)
    flows = meta.get("flows")
    if isinstance(flows, str):
        flows = [flows]
    running = meta.get("running")
    if isinstance(running, list | dict):
        running = len(running)
    elif isinstance(running, bool) or not isinstance(running, int):
        running = None
    return {
        "name": entity.name,
        "kind": entity.kind,
        "host": meta.get("host"),
        "pid": meta.get("pid"),
        "flows": list(flows) if isinstance(flows, list) else [],
        "running": running,
        "last_seen": entity.last_seen,
        "heartbeat_age": now - entity.last_seen,
        "metadata": dict(meta),
    }


# -- text renderers -------------------------------------------------------------
