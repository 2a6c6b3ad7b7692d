"""The read-only ``jobboard`` commands: list, show, claims, conductors, stats and export.

Each ``*_view`` function builds the document that ``--json`` prints (schema in
docs/admin.md); the ``cmd_*`` functions print it, or its text page from
:mod:`jobboard.admin.render`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from jobboard import errors
from jobboard.admin import fleet, lookup, render
from jobboard.admin.console import (
    ALL_STATES,
    EXIT_OK,
    EXIT_USAGE,
    LONG_CLAIM,
    CliError,
    echo,
    echo_json,
    find_job,
    screen_width,
)
from jobboard.admin.running import running_tasks, running_view
from jobboard.base import JobBoard
from jobboard.model import Entity, Job, JobState

__all__ = [
    "add_running",
    "claim_records",
    "claims_view",
    "cmd_claims",
    "cmd_conductors",
    "cmd_export",
    "cmd_list",
    "cmd_show",
    "cmd_stats",
    "paused_flows",
    "retries_of",
    "show_view",
    "stats_view",
]

log = logging.getLogger(__name__)

#: Where ``list`` puts a state: claimed, then waiting, then finished jobs.
_LIST_ORDER = {"claimed": 0, "waiting": 1}


def cmd_list(board: JobBoard, args: argparse.Namespace) -> int:
    """``list``: jobs by state and flow, active ones first."""
    states = ALL_STATES if not args.state or "all" in args.state else args.state
    jobs = list(board.iterjobs(states=states, flow=args.flow))
    # Active jobs first in claim order, then finished ones, most recent first.
    jobs.sort(key=lambda j: (_LIST_ORDER.get(j.state.value, 2), -(j.finished_at or 0)))
    total = len(jobs)
    shown = jobs[: args.limit] if args.limit else jobs
    now = time.time()
    ids = lookup.short_ids(j.id for j in jobs)
    running = running_view(board, shown, now)
    if args.json:
        docs = [
            {**j.to_dict(), "short_id": ids[j.id], "running": running.get(j.id, [])}
            for j in shown
        ]
        echo_json({"jobs": docs, "total": total})
        return EXIT_OK
    if not shown:
        echo("no jobs")
        return EXIT_OK
    echo(render.render_jobs(shown, now, screen_width(), ids=ids, running=running))
    if total > len(shown):
        echo(f"(showing {len(shown)} of {total} jobs; --limit 0 shows all)")
    return EXIT_OK


def show_view(board: JobBoard, job: Job, now: float) -> dict[str, Any]:
    """The ``show --json`` document of one job."""
    claim = None
    if job.state is JobState.CLAIMED:
        claim = render.claim_record(job, now, board.iter_entities(), LONG_CLAIM)
    progress = board.load_progress(job)
    parent = None
    if job.parent:
        try:
            parent = _relative(board.get(job.parent))
        except errors.JobNotFound:
            parent = {"id": job.parent, "name": None, "state": "purged"}
    return {
        "job": job.to_dict(),
        "claim": claim,
        "running": running_tasks(job, progress, now),
        "progress": render.progress_records(progress),
        "retries": [j.id for j in retries_of(board, job)] if job.state.finished else [],
        "parent": parent,
        "children": [_relative(child) for child in board.children(job)],
    }


def _relative(job: Job) -> dict[str, Any]:
    """A parent or child in ``show``: its id, name and state."""
    return {"id": job.id, "name": job.name, "state": job.state.value}


def retries_of(board: JobBoard, job: Job) -> list[Job]:
    """The jobs posted as retries of ``job`` (their details say ``retry_of``), oldest first."""
    found = [
        j
        for j in board.iterjobs(states=ALL_STATES, flow=job.flow)
        if isinstance(j.details, dict) and j.details.get("retry_of") == job.id
    ]
    found.sort(key=lambda j: j.created_at)
    return found


def cmd_show(board: JobBoard, args: argparse.Namespace) -> int:
    """``show``: one job with its claim and per-task progress."""
    job = find_job(board, args.job)
    now = time.time()
    view = show_view(board, job, now)
    if args.json:
        echo_json(view)
    else:
        echo(render.render_show(view, now, screen_width()))
    return EXIT_OK


def claim_records(
    jobs: Iterable[Job], entities: Sequence[Entity], now: float, long_after: float
) -> list[dict[str, Any]]:
    """The claimed ones of ``jobs`` as ``claims`` records, oldest claim first."""
    records = [
        render.claim_record(job, now, entities, long_after)
        for job in jobs
        if job.state is JobState.CLAIMED
    ]
    records.sort(key=lambda c: -(c["age"] or 0))
    return records


def claims_view(board: JobBoard, long_after: float) -> list[dict[str, Any]]:
    """Every claimed job as a ``claims`` record (oldest claim first) with its running tasks."""
    entities = board.iter_entities()
    now = time.time()
    jobs = list(board.iterjobs(states=[JobState.CLAIMED]))
    records = claim_records(jobs, entities, now, long_after)
    add_running(records, running_view(board, jobs, now))
    return records


def add_running(records: list[dict[str, Any]], running: dict[str, list[dict[str, Any]]]) -> None:
    """Give each claim record its ``running`` tasks and ``short_id`` (unique in the listing)."""
    ids = lookup.short_ids(r["job"] for r in records)
    for record in records:
        record["running"] = running.get(record["job"], [])
        record["short_id"] = ids[record["job"]]


def cmd_claims(board: JobBoard, args: argparse.Namespace) -> int:
    """``claims``: every current claim, suspicious ones marked and explained."""
    claims = claims_view(board, args.long_after)
    if args.json:
        echo_json({"claims": claims})
    elif not claims:
        echo("no claims")
    else:
        echo(render.render_claims(claims, screen_width()))
        if any(c["suspicious"] for c in claims):
            legend = (
                "! marks a suspicious claim: expired (lease ran out), unknown-owner (not a "
                "registered conductor), long (held over "
                f"{render.fmt_duration(args.long_after)}), cancel-requested (its owner should "
                "stop it soon)."
            )
            echo("\n" + textwrap.fill(legend, screen_width()))
    return EXIT_OK


def cmd_conductors(board: JobBoard, args: argparse.Namespace) -> int:
    """``conductors``: registered entities of a kind and their heartbeats."""
    now = time.time()
    conductors = fleet.conductor_rows(board.iter_entities(args.kind), now)
    if args.json:
        echo_json({"conductors": conductors})
    elif not conductors:
        echo(f"no registered {args.kind}s")
    else:
        echo(render.render_conductors(conductors, screen_width()))
        if any(c["stale"] for c in conductors):
            echo(
                "\n"
                + textwrap.fill(
                    "stale: no heartbeat for two refresh periods (the conductor is gone or "
                    "stuck; the board forgets it after a while and its leases run out).",
                    screen_width(),
                )
            )
    return EXIT_OK


def stats_view(board: JobBoard) -> dict[str, Any]:
    """The ``stats --json`` document."""
    stats = board.stats()
    counters = dict(stats.get("counters") or {})
    states = {s: stats["states"].get(s, 0) for s in ALL_STATES}
    view = {
        "states": states,
        "flows": stats.get("flows", {}),
        "oldest_waiting_age": stats.get("oldest_waiting_age"),
        "counters": counters,
        "claim_losses": counters.get("expired", 0),
        "trashed": counters.get("trashed", states["trashed"]),
        "poison": counters.get("poison", 0),
        "paused_flows": paused_flows(board),
    }
    if stats.get("server"):  # what the backend says of its server (durability, eviction)
        view["server"] = stats["server"]
    return view


def paused_flows(board: JobBoard) -> dict[str, dict[str, Any]]:
    """The board's paused flows, or ``{}`` when the backend cannot pause flows."""
    try:
        return board.paused_flows()
    except errors.BoardUnavailable:
        raise
    except errors.BoardError:
        return {}


def cmd_stats(board: JobBoard, args: argparse.Namespace) -> int:
    """``stats``: counts per state and flow, the oldest waiting job, counters."""
    view = stats_view(board)
    if args.json:
        echo_json(view)
    else:
        echo(render.render_stats(view, screen_width()))
    return EXIT_OK


def cmd_export(board: JobBoard, args: argparse.Namespace) -> int:
    """``export``: one JSON line per task execution, to stdout or ``--output``."""
    out: TextIO = sys.stdout
    handle = None
    if args.output:
        try:
            handle = out = open(args.output, "w", encoding="utf-8")
        except OSError as err:
            raise CliError(f"cannot write {args.output!r}: {err.strerror}", EXIT_USAGE) from err
    count = 0
    try:
        for job in board.iterjobs(states=ALL_STATES, flow=args.flow):
            try:
                progress = board.load_progress(job)
            except errors.JobNotFound:  # purged since the listing
                continue
            for record in render.export_records(job, progress):
                started = record["execution_start_time"] or record["submit_time"]
                if args.since is not None and (started is None or started < args.since):
                    continue
                out.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                count += 1
    finally:
        if handle is not None:
            handle.close()
    log.info("exported %s task executions", count)
    return EXIT_OK
