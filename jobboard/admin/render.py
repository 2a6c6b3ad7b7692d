"""What the admin tool shows, and how: views of jobs, claims and progress, as text.

The *views* (:mod:`jobboard.admin.records`) turn board objects into the
plain dicts that ``--json`` prints (their schema is documented in
docs/admin.md); the *pages* here render those dicts as text with the helpers
of :mod:`jobboard.admin.text`, whose names, like the views', are importable
from this module too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jobboard.admin.records import (
    EXECUTION_TIMES,
    STATE_ORDER,
    claim_record,
    conductor_record,
    error_text,
    execution_of,
    export_records,
    owner_known,
    progress_records,
    task_record,
)
from jobboard.admin.running import running_line
from jobboard.admin.text import (
    DEFAULT_WIDTH,
    ELLIPSIS,
    compact_json,
    counts_line,
    cut,
    fmt_age,
    fmt_clock,
    fmt_duration,
    fmt_time,
    key_values,
    one_line,
    printable,
    short_id,
    table,
)

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
    "printable",
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
    "spaced_json",
]



def _unreadable(job: Any) -> bool:
    """Whether a listed job stands in for a record the board could not read."""
    return "unreadable" in (job.details or {}) and not job.store


def render_jobs(
    jobs: Sequence[Any],
    now: float,
    width: int = DEFAULT_WIDTH,
    *,
    ids: Mapping[str, str] | None = None,
    running: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> str:
    """The ``list`` table; ``ids`` maps ids to the short ids shown, ``running`` ids to
    the running tasks of claimed jobs (the TASK column)."""
    ids = ids or {}
    running = running or {}
    rows = [
        (
            ids.get(j.id) or short_id(j.id),
            j.name,
            j.flow,
            f"{j.state} (unreadable)" if _unreadable(j) else str(j.state),
            str(j.priority),
            f"{j.attempts}/{j.max_attempts}",
            j.owner,
            fmt_age(j.created_at, now),
            running_line(running.get(j.id, ())),
        )
        for j in jobs
    ]
    headers: tuple[str, ...] = ("ID", "NAME", "FLOW", "STATE", "PRIORITY", "ATT", "OWNER", "AGE")
    if any(row[-1] for row in rows):
        headers += ("TASK",)
    else:
        rows = [row[:-1] for row in rows]  # type: ignore[misc]
    return table(headers, rows, width=width, right=(5, 7), fixed=(0, 3, 5, 7))


def render_claims(claims: Sequence[Mapping[str, Any]], width: int = DEFAULT_WIDTH) -> str:
    """The ``claims`` table; suspicious rows are marked with ``!``."""
    rows = [
        (
            "!" if c["suspicious"] else "",
            c.get("short_id") or short_id(c["job"]),
            c["name"],
            c["owner"],
            fmt_duration(c["age"]),
            "session" if c["lease_left"] is None else fmt_duration(c["lease_left"]),
            ",".join(c["flags"]) or "ok",
            running_line(c.get("running") or ()),
        )
        for c in claims
    ]
    headers = ("", "JOB", "NAME", "OWNER", "AGE", "LEASE", "FLAGS", "TASK")
    return table(headers, rows, width=width, right=(4, 5), fixed=(0, 1, 4, 5))


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
            "stale" if c.get("stale") else "live",
        )
        for c in conductors
    ]
    headers = ("NAME", "HOST", "PID", "FLOWS", "RUNNING", "HEARTBEAT", "STATUS")
    return table(headers, rows, width=width, right=(2, 4, 5), fixed=(5, 6))


def _family_lines(view: Mapping[str, Any]) -> list[str]:
    """``show``'s parent and children lines (none when the job has neither)."""
    lines = []
    parent = view.get("parent")
    if parent:
        lines += ["", f"Parent: {parent['id']} ({parent['name']!r}, {parent['state']})"]
    kids = view.get("children") or []
    if kids:
        lines += ["", f"Children ({len(kids)})"]
        lines += [f"  {k['id']}  {k['state']:<9}  {k['name']}" for k in kids]
    return lines


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
        ("result", spaced_json(job["result"])),
        ("store", spaced_json(job["store"])),
        ("details", spaced_json(job["details"])),
    ]
    if view.get("retries"):
        fields.append(("retried as", ", ".join(view["retries"])))
    out = [f"Job {job['id']}", key_values(fields, width=width)]
    out.extend(_family_lines(view))
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
    running = view.get("running") or []
    if running:
        out += ["", f"Running ({len(running)} task{'s' if len(running) > 1 else ''})"]
        for task in running:
            out.append(key_values(_running_fields(task), width=width))
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


def spaced_json(value: Any) -> str:
    """JSON on one line with a space after each comma, so that long values wrap on words."""
    return json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)


def _running_fields(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``show`` lines of one running task."""
    number, count = task["task_number"], task["task_count"]
    where = f"task {number} of {count}" if number is not None and count is not None else "task"
    fields: list[tuple[str, Any]] = [
        (where, task["task"]),
        ("running for", fmt_duration(task["running_for"])),
    ]
    if task["fraction"] is not None:
        fields.append(("progress", f"{task['fraction'] * 100:.0f}%"))
    if task["message"]:
        fields.append(("message", task["message"]))
    if task["details"]:
        fields.append(("details", spaced_json(task["details"])))
    if task["updated_at"] is not None:
        fields.append(("reported", f"{fmt_duration(task['progress_age'])} ago"))
    else:
        fields.append(("reported", "no progress report yet"))
    return fields


def render_stats(stats: Mapping[str, Any], width: int = DEFAULT_WIDTH) -> str:
    """The ``stats`` page."""
    states = stats["states"]
    out = [
        "Jobs by state",
        "  " + counts_line({s: states.get(s, 0) for s in STATE_ORDER[:3]}),  # unfinished
        "  " + counts_line({s: states.get(s, 0) for s in STATE_ORDER[3:]}),  # finished
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
        out += ["", table(headers, rows, width=width, right=range(1, len(STATE_ORDER) + 1))]
    paused = stats.get("paused_flows") or {}
    if paused:
        out += ["", "Paused flows (conductors do not claim their jobs)"]
        out.append(key_values(_paused_rows(paused), width=width))
    counters = stats["counters"]
    if counters:
        out += ["", "Counters", key_values(sorted(counters.items()), width=width)]
    server = stats.get("server")
    if server:
        shown = [(k, server[k]) for k in _SERVER_KEYS if server.get(k) not in (None, "", [])]
        shown += [("warning", w) for w in server.get("warnings") or ()]
        out += ["", "Server", key_values(shown, width=width)]
    return "\n".join(out)


def _paused_rows(paused: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Any]]:
    rows = []
    for flow in sorted(paused):
        note = paused[flow]
        reason = note.get("reason") or "no reason given"
        by = f" (by {note['by']})" if note.get("by") else ""
        rows.append((flow, f"{reason}{by}"))
    return rows


#: What ``stats`` shows of ``stats()["server"]``, in order.
_SERVER_KEYS = ("address", "persistence", "loss_window", "eviction", "epoch", "halted")


def render_watch(snapshot: Mapping[str, Any], width: int = DEFAULT_WIDTH) -> str:
    """One frame of ``watch``: counts, paused flows, conductors, claims and recent events.

    A ``banner`` (the board unreachable) goes first and the rest is the last
    frame that could be read.
    """
    out = []
    if snapshot.get("banner"):
        out += [cut(f"!! {snapshot['banner']}", width)]
    out += [
        cut(f"jobboard watch  {fmt_time(snapshot['now'])}  {snapshot['board']}", width),
        "  " + counts_line(snapshot["counts"]),
    ]
    paused = snapshot.get("paused") or {}
    if paused:
        out.append(cut("  paused: " + ", ".join(sorted(paused)), width))
    out.append("")
    conductors = snapshot.get("conductors")
    if conductors is not None:
        live = sum(1 for c in conductors if not c.get("stale"))
        out.append(f"Conductors ({live} live, {len(conductors) - live} stale)")
        if conductors:
            rows = [
                (
                    str(c["metadata"].get("name") or c["name"]),
                    ",".join(str(f) for f in c["flows"]) or "-",
                    c["running"],
                    fmt_duration(c["heartbeat_age"]) + " ago",
                    "stale" if c.get("stale") else "live",
                )
                for c in conductors[: snapshot.get("max_conductors", 5)]
            ]
            headers = ("NAME", "FLOWS", "RUNNING", "HEARTBEAT", "STATUS")
            out.append(table(headers, rows, width=width, right=(2, 3), fixed=(2, 3, 4)))
            if len(conductors) > len(rows):
                out.append(f"  … and {len(conductors) - len(rows)} more (jobboard conductors)")
        out.append("")
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
