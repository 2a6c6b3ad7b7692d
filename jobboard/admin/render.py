"""What the admin tool shows, and how: views of jobs, claims and progress, as text.

The *views* turn board objects into the plain dicts that ``--json`` prints
(their schema is documented in docs/admin.md); the *pages* render those dicts
as text. Only the standard library: tables fit a given width (80 columns by
default) by shrinking the widest columns and cutting cells with an ellipsis,
so the output stays readable in a narrow terminal, a pager or a log file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    # text helpers
    "DEFAULT_WIDTH",
    "ELLIPSIS",
    "compact_json",
    "counts_line",
    "cut",
    "fmt_age",
    "fmt_clock",
    "fmt_duration",
    "fmt_time",
    "key_values",
    "one_line",
    "short_id",
    "table",
    # views: the records listings print as JSON
    "EXECUTION_TIMES",
    "claim_record",
    "conductor_record",
    "error_text",
    "execution_of",
    "export_records",
    "owner_known",
    "progress_records",
    "task_record",
    # pages
    "render_claims",
    "render_conductors",
    "render_jobs",
    "render_show",
    "render_stats",
    "render_watch",
]

#: Width used when the caller does not know the terminal's.
DEFAULT_WIDTH = 80
#: Marks a cell or value that was cut to fit.
ELLIPSIS = "…"
#: Spaces between two table columns.
COLUMN_GAP = 2
#: Narrowest a shrunk column gets (its header may be cut below this).
MIN_COLUMN = 5
#: Characters of a job id shown in tables (any unique prefix is accepted back).
SHORT_ID = 12


def one_line(text: Any) -> str:
    """``text`` as a string with line breaks and tabs turned into spaces."""
    return str(text).translate(_FLATTEN)


_FLATTEN = {ord(c): " " for c in "\n\r\t\v\f"}


def cut(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = one_line(text)
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS


def short_id(job_id: str | None) -> str:
    """The first characters of a job id, as shown in tables."""
    return (job_id or "-")[:SHORT_ID]


def fmt_duration(seconds: float | None) -> str:
    """A compact human duration: ``45ms``, ``12.3s``, ``3m05s``, ``2h03m``, ``1d04h``."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(float(seconds))
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    if s < 60:
        return f"{sign}{s:.1f}s"
    whole = int(s)
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{sign}{whole // 86400}d{whole % 86400 // 3600:02d}h"


def fmt_age(timestamp: float | None, now: float | None = None) -> str:
    """How long ago a board timestamp was, e.g. ``3m05s``; ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return fmt_duration((time.time() if now is None else now) - timestamp)


def fmt_time(timestamp: float | None) -> str:
    """A board timestamp as UTC ISO 8601 with milliseconds, e.g. ``2024-05-01T12:00:03.250Z``."""
    if timestamp is None:
        return "-"
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{whole}.{int(timestamp % 1 * 1000):03d}Z"


def fmt_clock(timestamp: float | None) -> str:
    """The UTC time of day of a timestamp, ``HH:MM:SS``, for narrow columns."""
    if timestamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(timestamp))


def compact_json(value: Any) -> str:
    """JSON on one line, for cells and key-value blocks."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _fit(widths: list[int], floors: list[int], budget: int) -> list[int]:
    """Shrink the widest columns, one character at a time, until they fit ``budget``."""
    widths = list(widths)
    excess = sum(widths) - budget
    while excess > 0:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    width: int = DEFAULT_WIDTH,
    right: Iterable[int] = (),
    fixed: Iterable[int] = (),
    indent: int = 0,
) -> str:
    """A text table that fits ``width`` columns; ``right`` lists right-aligned columns.

    Cells are converted with ``str``; ``None`` shows as ``-``. Columns wider
    than their share are cut with an ellipsis (the widest first), except the
    ``fixed`` ones (ids, numbers), which are never cut.
    """
    cells = [["-" if c is None else one_line(c) for c in row] for row in rows]
    natural = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            natural[i] = max(natural[i], len(cell))
    keep = set(fixed)
    floors = [n if i in keep else min(n, MIN_COLUMN) for i, n in enumerate(natural)]
    budget = width - indent - COLUMN_GAP * (len(headers) - 1)
    widths = _fit(natural, floors, budget)
    aligned = set(right)
    pad = " " * indent
    gap = " " * COLUMN_GAP

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            text = cut(value, widths[i])
            parts.append(text.rjust(widths[i]) if i in aligned else text.ljust(widths[i]))
        return (pad + gap.join(parts)).rstrip()

    out = [line(list(headers))]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def key_values(
    pairs: Iterable[tuple[str, Any]], *, width: int = DEFAULT_WIDTH, indent: int = 2
) -> str:
    """Aligned ``key  value`` lines; long values wrap under the value column."""
    items = [(k, "-" if v is None else str(v)) for k, v in pairs]
    if not items:
        return ""
    key_width = max(len(k) for k, _ in items)
    room = max(20, width - indent - key_width - COLUMN_GAP)
    lead = " " * (indent + key_width + COLUMN_GAP)
    out = []
    for key, value in items:
        chunks = [value[i : i + room] for i in range(0, len(value), room)] or [""]
        out.append(" " * indent + key.ljust(key_width) + " " * COLUMN_GAP + chunks[0])
        out.extend(lead + chunk for chunk in chunks[1:])
    return "\n".join(line.rstrip() for line in out)


def counts_line(counts: Mapping[str, int | None]) -> str:
    """``waiting 3   claimed 1   complete 12`` from an ordered mapping."""
    return "   ".join(f"{name} {'-' if n is None else n}" for name, n in counts.items())


# -- views: what the admin tool shows of jobs, claims, conductors and progress --

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
STATE_ORDER = ("waiting", "claimed", "complete", "failed", "trashed", "cancelled")


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (records may hold anything)."""
    return value if isinstance(value, Mapping) else {}


def _timestamp(value: Any) -> float | None:
    """A timestamp of an execution record; 0 (a phase never reached) counts as missing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def execution_of(record: Any) -> dict[str, Any]:
    """The execution record of a progress record, flattened; ``{}`` when there is none.

    Accepts the engine's flat record and a task-info record that nests the
    timing under a second ``execution`` key.
    """
    flat = dict(_mapping(_mapping(record).get("execution")))
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
    record = _mapping(record)
    execution = execution_of(record)
    metadata = _mapping(record.get("metadata"))
    durations = {}
    for phase, start, end in PHASES:
        a, b = _timestamp(execution.get(start)), _timestamp(execution.get(end))
        durations[phase] = None if a is None or b is None else b - a
    starts = (
        _timestamp(execution.get(k))
        for k in ("execution_start_time", "task_start_time", "submit_time")
    )
    start = next((t for t in starts if t is not None), None)
    error = error_text(record.get("failure")) or error_text(execution.get("exception"))
    success = execution.get("success")
    if not isinstance(success, bool):
        success = None
    return {
        "task": name,
        "state": record.get("state"),
        "host": execution.get("hostname") or execution.get("host"),
        "start": start,
        "durations": durations,
        "success": success,
        "result": record.get("result"),
        "error": error,
        "conductor": metadata.get("owner") or metadata.get("conductor"),
        "execution": {k: _timestamp(execution.get(k)) for k in EXECUTION_TIMES}
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
        meta = _mapping(entity.metadata)
        owners = meta.get("owners") if isinstance(meta.get("owners"), list) else []
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
    meta = _mapping(entity.metadata)
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


def render_jobs(jobs: Sequence[Any], now: float, width: int = DEFAULT_WIDTH) -> str:
    """The ``list`` table."""
    rows = [
        (
            short_id(j.id),
            j.name,
            j.flow,
            str(j.state),
            str(j.priority),
            f"{j.attempts}/{j.max_attempts}",
            j.owner,
            fmt_age(j.created_at, now),
        )
        for j in jobs
    ]
    headers = ("ID", "NAME", "FLOW", "STATE", "PRIORITY", "ATT", "OWNER", "AGE")
    return table(headers, rows, width=width, right=(5, 7), fixed=(0, 3, 5, 7))


def render_claims(claims: Sequence[Mapping[str, Any]], width: int = DEFAULT_WIDTH) -> str:
    """The ``claims`` table; suspicious rows are marked with ``!``."""
    rows = [
        (
            "!" if c["suspicious"] else "",
            short_id(c["job"]),
            c["owner"],
            fmt_duration(c["age"]),
            "session" if c["lease_left"] is None else fmt_duration(c["lease_left"]),
            c["token"],
            ",".join(c["flags"]) or "ok",
        )
        for c in claims
    ]
    headers = ("", "JOB", "OWNER", "AGE", "LEASE", "TOKEN", "FLAGS")
    return table(headers, rows, width=width, right=(3, 4, 5), fixed=(0, 1, 3, 4, 5))


def render_conductors(conductors: Sequence[Mapping[str, Any]], width: int = DEFAULT_WIDTH) -> str:
    """The ``conductors`` table."""
    rows = [
        (
            c["name"],
            c["host"],
            c["pid"],
            ",".join(str(f) for f in c["flows"]) or "-",
            c["running"],
            fmt_duration(c["heartbeat_age"]) + " ago",
        )
        for c in conductors
    ]
    headers = ("NAME", "HOST", "PID", "FLOWS", "RUNNING", "HEARTBEAT")
    return table(headers, rows, width=width, right=(2, 4, 5))


def render_show(view: Mapping[str, Any], now: float, width: int = DEFAULT_WIDTH) -> str:
    """The ``show`` page: every field, the claim, then per-task progress and failures."""
    job = view["job"]

    def moment(key: str) -> str:
        """A timestamp field as ``ISO time (age ago)``."""
        return f"{fmt_time(job[key])} ({fmt_age(job[key], now)} ago)"

    fields = [
        ("id", job["id"]),
        ("name", job["name"]),
        ("flow", job["flow"]),
        ("state", job["state"]),
        ("priority", job["priority"]),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("token", job["token"]),
        ("seq", job["seq"]),
        ("created", moment("created_at")),
        ("updated", moment("updated_at")),
        ("finished", fmt_time(job["finished_at"])),
        ("cancel requested", "yes" if job["cancel_requested"] else "no"),
        ("last error", job["last_error"]),
        ("result", compact_json(job["result"])),
        ("store", compact_json(job["store"])),
        ("details", compact_json(job["details"])),
    ]
    out = [f"Job {job['id']}", key_values(fields, width=width)]
    claim = view["claim"]
    out.append("")
    if claim is None:
        out.append("Claim: none")
    else:
        lease = claim["lease_left"]
        out.append("Claim")
        out.append(
            key_values(
                [
                    ("owner", claim["owner"]),
                    ("since", f"{fmt_time(claim['claimed_at'])} ({fmt_duration(claim['age'])})"),
                    ("lease left", "session-bound" if lease is None else fmt_duration(lease)),
                    ("token", claim["token"]),
                    ("flags", ",".join(claim["flags"]) or "ok"),
                ],
                width=width,
            )
        )
    tasks = view["progress"]
    out.append("")
    if not tasks:
        out.append("Progress: no task has saved progress")
        return "\n".join(out)
    out.append(f"Progress ({len(tasks)} tasks; times UTC, phases: input / task / result)")
    rows = [
        (
            t["task"],
            t["state"],
            t["host"],
            fmt_clock(t["start"]),
            fmt_duration(t["durations"]["input_transform"]),
            fmt_duration(t["durations"]["task"]),
            fmt_duration(t["durations"]["result_transform"]),
            ("error: " + t["error"]) if t["error"] else compact_json(t["result"]),
        )
        for t in tasks
    ]
    headers = ("TASK", "STATE", "HOST", "START", "INPUT", "TASK", "RESULT", "OUTCOME")
    out.append(table(headers, rows, width=width, right=(4, 5, 6), indent=2))
    failures = [t for t in tasks if t["error"]]
    if failures:
        out.append("")
        out.append("Failures")
        out.append(key_values([(t["task"], t["error"]) for t in failures], width=width))
    return "\n".join(out)


def render_stats(stats: Mapping[str, Any], width: int = DEFAULT_WIDTH) -> str:
    """The ``stats`` page."""
    states = stats["states"]
    out = [
        "Jobs by state",
        "  " + counts_line({s: states.get(s, 0) for s in STATE_ORDER}),
        "",
        key_values(
            [
                ("oldest waiting job", fmt_duration(stats["oldest_waiting_age"])),
                ("claim losses (leases expired)", stats["claim_losses"]),
                ("trashed", f"{stats['trashed']} (poison jobs: {stats['poison']})"),
            ],
            width=width,
            indent=0,
        ),
    ]
    flows = stats["flows"]
    if flows:
        rows = [(f, *(flows[f].get(s, 0) for s in STATE_ORDER)) for f in sorted(flows)]
        headers = ("FLOW", *(s.upper() for s in STATE_ORDER))
        out += ["", table(headers, rows, width=width, right=range(1, 7))]
    counters = stats["counters"]
    if counters:
        out += ["", "Counters", key_values(sorted(counters.items()), width=width)]
    return "\n".join(out)


def render_watch(snapshot: Mapping[str, Any], width: int = DEFAULT_WIDTH) -> str:
    """One frame of ``watch``: counts, claims and recent events."""
    out = [
        cut(f"jobboard watch  {fmt_time(snapshot['now'])}  {snapshot['board']}", width),
        "  " + counts_line(snapshot["counts"]),
        "",
    ]
    claims = snapshot["claims"]
    shown = claims[: snapshot.get("max_claims", 10)]
    out.append(f"Claims ({len(claims)})")
    if shown:
        out.append(render_claims(shown, width=width))
        if len(claims) > len(shown):
            out.append(f"  … and {len(claims) - len(shown)} more (jobboard claims)")
    out += ["", "Recent events"]
    for when, kind, job_id, data in snapshot["events"]:
        extra = " ".join(f"{k}={v}" for k, v in sorted(data.items()) if k != "token")
        out.append(cut(f"  {fmt_clock(when)}  {kind:<16} {short_id(job_id)}  {extra}", width))
    if not snapshot["events"]:
        out.append("  (none yet)")
    out += ["", "Ctrl-C to quit"]
    return "\n".join(out)
