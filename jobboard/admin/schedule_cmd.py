"""``jobboard schedule add|list|remove|pause|resume``: the board's periodic schedules.

The schedules themselves (records, cron, promotion) live in
:mod:`jobboard.schedules`; this module parses the subcommand and prints.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from jobboard import errors, schedules
from jobboard.admin.console import EXIT_OK, EXIT_USAGE, CliError, echo, echo_json
from jobboard.base import JobBoard

__all__ = ["add_arguments", "cmd_schedule"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``schedule`` subcommands and their options."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="store a new schedule")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--flow", required=True, help="flow each tick's job runs")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=float, metavar="SECONDS", help="a tick every S seconds")
    when.add_argument("--cron", metavar="EXPR", help="5-field cron expression, UTC")
    add.add_argument("--store", default=None, metavar="JSON", help="each job's store")
    add.add_argument("--priority", default="NORMAL", help="each job's priority")
    add.add_argument("--paused", action="store_true", help="store it paused")
    show = actions.add_parser("list", help="every schedule, its next run and who serves it")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, text in (("remove", "delete"), ("pause", "pause"), ("resume", "resume")):
        p = actions.add_parser(name, help=f"{text} a schedule")
        p.add_argument("name", metavar="NAME")


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        store = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"--store is not valid JSON: {err}", EXIT_USAGE) from err
    if not isinstance(store, dict):
        raise CliError("--store must be a JSON object", EXIT_USAGE)
    return store


def _list(board: JobBoard, as_json: bool) -> int:
    served = {f for e in board.iter_entities("conductor") for f in e.metadata.get("flows", [])}
    rows = []
    for s in schedules.list_schedules(board):
        rows.append(
            {
                "name": s.name,
                "flow": s.flow,
                "every": s.every,
                "cron": s.cron,
                "priority": s.priority,
                "paused": s.paused,
                "next_at": s.next_at,
                "served": s.flow in served,
            }
        )
    if as_json:
        echo_json(rows)
        return EXIT_OK
    if not rows:
        echo("no schedules")
    for row in rows:
        period = f"cron {row['cron']!r}" if row["cron"] else f"every {row['every']:g}s"
        state = "paused" if row["paused"] else f"next {_when(float(row['next_at'] or 0))}"
        echo(f"{row['name']}  flow {row['flow']}  {period}  {state}")
        if not row["served"]:
            echo(f"  warning: no live conductor serves flow {row['flow']}")
    return EXIT_OK


def cmd_schedule(board: JobBoard, args: argparse.Namespace) -> int:
    """Run one ``schedule`` action."""
    if args.action == "add":
        try:
            made = schedules.add_schedule(
                board,
                args.name,
                args.flow,
                every=args.every,
                cron=args.cron,
                store=_store(args.store),
                priority=args.priority,
                paused=args.paused,
            )
        except KeyError as err:
            raise CliError(f"--priority: unknown priority {args.priority!r}", EXIT_USAGE) from err
        except errors.VersionConflict as err:
            raise CliError(f"schedule {args.name!r} already exists") from err
        echo(f"schedule {made.name} added: next run {_when(made.next_at)}")
        return EXIT_OK
    if args.action == "list":
        return _list(board, args.json)
    if args.action == "remove":
        if not board.remove_schedule(args.name):
            raise CliError(f"no schedule named {args.name!r}")
        echo(f"schedule {args.name} removed")
        return EXIT_OK
    paused = args.action == "pause"
    changed = schedules.set_paused(board, args.name, paused)
    echo(f"schedule {changed.name} {'paused' if paused else 'resumed'}")
    return EXIT_OK
