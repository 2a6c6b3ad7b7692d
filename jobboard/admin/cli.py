"""The ``jobboard`` admin tool: see and steer every job and claim of a board.

``jobboard [--board URL] COMMAND ...`` (the URL may come from ``--board-file``,
``$JOBBOARD_BOARD`` or ``$CONDUCTOR_BOARD``; every option from ``JOBBOARD_<OPTION>``).
Listings print tables fitted to the terminal (80 columns when unknown) or,
with ``--json``, one JSON document whose schema docs/admin.md describes.
Operations that change the board ask for confirmation unless ``--yes`` and
refuse clearly, changing nothing, when the job is in the wrong state. Every
failure prints one line to stderr and exits with one of the ``EXIT_*`` codes.

This module holds the parser and the dispatch; the commands live in
:mod:`jobboard.admin.listings` (read-only), :mod:`jobboard.admin.operations` (changes)
and :mod:`jobboard.admin.watch` (the live view).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import jobboard
from jobboard import envopts, errors
from jobboard.admin import listings, operations, render, schedule_cmd, watch
from jobboard.admin.console import (
    ALL_STATES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    LONG_CLAIM,
    CliError,
    Command,
)
from jobboard.admin.watch import Watch
from jobboard.admin.web import commands as web_commands
from jobboard.model import JobPriority

__all__ = [
    "ENV_BOARD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Watch",
    "build_parser",
    "main",
    "parse_duration",
]

log = logging.getLogger(__name__)

#: Environment variable holding the board URL when ``--board`` is not given.
ENV_BOARD = "CONDUCTOR_BOARD"
#: Prefixes of the variables read, in order (``JOBBOARD_BOARD`` before ``CONDUCTOR_BOARD``).
ENV_PREFIXES = ("JOBBOARD", "CONDUCTOR")
#: Rows ``list`` prints unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 100
#: Longest error line printed (a message that echoes huge input is cut).
ERROR_LINE_LIMIT = 400

#: How long ``cancel --force`` waits for the conductor before it ends the job itself.
DEFAULT_GRACE = 10.0

_JOB_HELP = "job id, a unique prefix of one, or a job name only one job has"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


# -- argument types -------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``2h``, ``1d``, ``1h30m``, ``250ms``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r} (examples: 30s, 15m, 2h, 1d, 1h30m)"
            ) from None
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be >= 0")
    return seconds


def _parse_since(text: str) -> float:
    """A board timestamp from a duration ago (``2h``), an ISO time (UTC if no zone) or epoch."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r} (examples: 2h, 2024-05-01T12:00:00Z, 1714564800)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_at(text: str) -> float:
    """A future board timestamp (``--not-before``): an ISO time (UTC if no zone) or epoch."""
    if _DURATION_PART.fullmatch(text.strip().lower()):
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: give a moment (2024-05-01T12:00:00Z or epoch); "
            "use --delay for a duration"
        )
    return _parse_since(text)


def _count(text: str) -> int:
    """A whole number >= 0 (``--limit``, ``--iterations``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _priority(text: str) -> str:
    """A job priority name, any case (``high``, ``VERY_LOW``), as its member name."""
    value = text.strip().upper()
    if value not in JobPriority.__members__:
        names = ", ".join(p.value for p in JobPriority)
        raise argparse.ArgumentTypeError(f"invalid priority {text!r} (choose from {names})")
    return value


# -- the parser -----------------------------------------------------------------


_EPILOG = f"""\
examples:
  export {ENV_BOARD}=redis://127.0.0.1:6379/0?namespace=prod
  jobboard list --state failed --flow billing
  jobboard show 3fa4c2d1            (any unique prefix of a job id, or a unique job name)
  jobboard claims --json | jq '.claims[] | select(.suspicious)'
  jobboard post nightly-report --flow reports --store '{{"day": "2024-05-01"}}'
  jobboard trash 3fa4c2d1 --reason "bad input" --yes
  jobboard purge --state complete --older-than 1d
  jobboard --board sqlite:///var/lib/conductor/board.db watch

every option also comes from JOBBOARD_<OPTION> (e.g. JOBBOARD_LIMIT=20, JOBBOARD_JSON=1);
the board from --board, --board-file, JOBBOARD_BOARD(_FILE) or CONDUCTOR_BOARD(_FILE).

exit codes: {EXIT_OK} ok, {EXIT_REFUSED} refused operation, {EXIT_USAGE} bad usage, \
{EXIT_UNAVAILABLE} board unreachable, {EXIT_TIMEOUT} post --wait timed out
"""


class _Command(NamedTuple):
    """A subcommand: what runs it, its one-line help and its examples."""

    run: Command
    summary: str
    examples: str


#: Every subcommand by name.
_COMMANDS: dict[str, _Command] = {
    "list": _Command(
        listings.cmd_list,
        "list jobs",
        "jobboard list\n  jobboard list --state waiting --state claimed "
        "--flow billing --limit 20\n  jobboard list --state failed --json",
    ),
    "show": _Command(
        listings.cmd_show,
        "one job: fields, claim, per-task progress and timings",
        "jobboard show 3fa4c2d1\n  jobboard show 3fa4c2d1e8b94f0c9d1a2b3c4d5e6f70 --json",
    ),
    "claims": _Command(
        listings.cmd_claims,
        "every current claim, stale or suspicious ones marked",
        "jobboard claims\n  jobboard claims --long-after 30m --json",
    ),
    "conductors": _Command(
        listings.cmd_conductors,
        "registered conductors and their heartbeats",
        "jobboard conductors\n  jobboard conductors --json",
    ),
    "watch": _Command(
        watch.cmd_watch,
        "live view of counts, claims and events (Ctrl-C quits)",
        "jobboard watch\n  jobboard watch --interval 10s",
    ),
    "post": _Command(
        operations.cmd_post,
        "post a job; prints its id",
        "jobboard post resize-42 --flow images --store '{\"image\": 42}'\n"
        "  jobboard post rebuild --flow index --store @params.json --priority high "
        "--max-attempts 3",
    ),
    "abandon": _Command(
        operations.cmd_forced,
        "release a claimed job so another conductor takes it",
        "jobboard abandon 3fa4c2d1\n  jobboard abandon 3fa4c2d1 --reason 'host draining' --yes",
    ),
    "trash": _Command(
        operations.cmd_forced,
        "end an unfinished job as trashed (never run again)",
        "jobboard trash 3fa4c2d1 --reason 'poison input' --yes",
    ),
    "cancel": _Command(
        operations.cmd_cancel,
        "cancel a job (a running one is stopped by its conductor)",
        "jobboard cancel 3fa4c2d1 --yes\n"
        "  jobboard cancel nightly-report --force --grace 30s --reason 'stuck on I/O' --yes",
    ),
    "retry": _Command(
        operations.cmd_retry,
        "post a failed, trashed or cancelled job again; prints the new id",
        "jobboard retry 3fa4c2d1 --yes\n"
        "  jobboard retry 3fa4c2d1 --again --yes   (it was retried before)\n"
        "  jobboard retry --all --flow billing --since 2h --yes",
    ),
    "purge": _Command(
        operations.cmd_purge,
        "delete finished jobs older than a duration, or cancel a waiting backlog",
        "jobboard purge --state complete --older-than 1d\n"
        "  jobboard purge --older-than 2w --yes   (every finished state)\n"
        "  jobboard purge --state waiting --flow images --force --yes   (cancel the backlog)",
    ),
    "pause": _Command(
        operations.cmd_pause,
        "stop conductors claiming jobs of a flow (no FLOW: list paused flows)",
        "jobboard pause billing --reason 'payment provider down'\n  jobboard pause --json",
    ),
    "resume": _Command(
        operations.cmd_resume,
        "let conductors claim jobs of a paused flow again",
        "jobboard resume billing",
    ),
    "export": _Command(
        listings.cmd_export,
        "task executions as JSON lines, for offline analysis",
        "jobboard export --since 2h --format jsonl > runs.jsonl\n"
        "  jobboard export --since 2024-05-01T00:00:00Z --flow billing -o billing.jsonl",
    ),
    "schedule": _Command(
        schedule_cmd.cmd_schedule,
        "periodic schedules: add, list, remove, pause, resume",
        "jobboard schedule add nightly --flow reports --cron '0 2 * * *'\n"
        "  jobboard schedule add poll --flow feeds --every 300 --store '{\"feed\": 1}'\n"
        "  jobboard schedule list\n  jobboard schedule pause nightly",
    ),
    "stats": _Command(
        listings.cmd_stats,
        "counts per state and flow, oldest waiting job, counters",
        "jobboard stats\n  jobboard stats --json",
    ),
}
# jobboard serve, jobboard metrics (jobboard/admin/web/commands.py)
_COMMANDS.update({name: _Command(*spec) for name, spec in web_commands.COMMANDS.items()})


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jobboard`` command."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="jobboard",
        description="Inspect and steer the jobs and claims of a job board.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    envopts.add_version(parser)
    parser.add_argument("--board", metavar="URL", default=None, help=f"board URL (or ${ENV_BOARD})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    # The same options after the subcommand; SUPPRESS keeps the top-level value when absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--board", metavar="URL", default=argparse.SUPPRESS, help="board URL")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details"
    )
    envopts.add_board_file(parser, common)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (schema in docs/admin.md)")
    confirm = argparse.ArgumentParser(add_help=False)
    confirm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command = _COMMANDS[name]
        return sub.add_parser(
            name,
            help=command.summary,
            description=command.summary[0].upper() + command.summary[1:] + ".",
            epilog=f"examples:\n  {command.examples}",
            formatter_class=formatter,
            parents=[common, *parents],
        )

    p = add("list", as_json)
    p.add_argument(
        "--state",
        action="append",
        choices=[*ALL_STATES, "all"],
        help="only jobs in this state (repeatable; default: all)",
    )
    p.add_argument("--flow", help="only jobs of this flow")
    p.add_argument(
        "--limit",
        type=_count,
        default=DEFAULT_LIMIT,
        help=f"at most N jobs (0: no limit; default {DEFAULT_LIMIT})",
    )

    p = add("show", as_json)
    p.add_argument("job", metavar="JOB", help=_JOB_HELP)

    long_after = argparse.ArgumentParser(add_help=False)
    long_after.add_argument(
        "--long-after",
        type=parse_duration,
        default=LONG_CLAIM,
        metavar="DURATION",
        help="flag claims held longer than this (default 1h)",
    )
    add("claims", as_json, long_after)
    p = add("watch", long_after)
    p.add_argument(
        "--interval",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="full refresh period; events refresh sooner (default 5s)",
    )
    p.add_argument(
        "--iterations",
        type=_count,
        default=0,
        metavar="N",
        help="stop after N refreshes (default: until Ctrl-C)",
    )

    p = add("conductors", as_json)
    p.add_argument("--kind", default="conductor", help="entity kind (default: conductor)")

    p = add("post", as_json)
    p.add_argument("name", metavar="NAME", help="job name")
    p.add_argument("--flow", required=True, help="registered flow that runs the job")
    p.add_argument(
        "--store",
        default=None,
        metavar="JSON|@FILE",
        help="the job's store: a JSON object, or @path to a file holding one",
    )
    p.add_argument(
        "--priority",
        type=_priority,
        default="NORMAL",
        help="very_high, high, normal (default), low or very_low",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        metavar="N",
        help="claims before the job is trashed as poison (default: board's)",
    )
    p.add_argument("--key", default=None, help="dedupe key: a job holding it is returned instead")
    later = p.add_mutually_exclusive_group()
    later.add_argument(
        "--delay", type=parse_duration, default=None, metavar="DURATION", help="due after this"
    )
    later.add_argument(
        "--not-before", type=_parse_at, default=None, metavar="WHEN", help="due at this time"
    )
    p.add_argument("--wait", action="store_true", help="wait for the outcome; exit by it")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="with --wait: give up after this long (exit 4)",
    )

    for name in ("abandon", "trash"):
        p = add(name, confirm)
        p.add_argument("job", metavar="JOB", help=_JOB_HELP)
        p.add_argument("--reason", help="why (recorded as the job's last error)")
    p = add("cancel", confirm)
    p.add_argument("job", metavar="JOB", help=_JOB_HELP)
    p.add_argument(
        "--force",
        action="store_true",
        help="if its conductor has not stopped a running job within --grace, end it as "
        "cancelled anyway (it never runs again; the conductor's writes are refused)",
    )
    p.add_argument(
        "--grace",
        type=parse_duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help=f"how long --force waits for the conductor (default {DEFAULT_GRACE:g}s)",
    )
    p.add_argument("--reason", help="why (recorded when --force ends the job)")

    p = add("retry", confirm)
    p.add_argument("job", metavar="JOB", nargs="?", help=_JOB_HELP)
    p.add_argument("--again", action="store_true", help="retry even if it was retried before")
    p.add_argument("--all", action="store_true", help="every matching job of --flow")
    p.add_argument("--flow", help="with --all: the flow whose jobs are retried")
    p.add_argument(
        "--since",
        type=_parse_since,
        default=None,
        metavar="WHEN",
        help="with --all: jobs that ended since: a duration ago (2h), ISO time or epoch",
    )
    p.add_argument(
        "--state",
        action="append",
        choices=["failed", "trashed", "cancelled"],
        help="with --all: state to retry (repeatable; default: failed)",
    )

    p = add("purge", confirm)
    p.add_argument(
        "--state",
        action="append",
        choices=ALL_STATES,
        help="finished state to purge (repeatable; default: every finished state), "
        "or waiting (with --force) to cancel a waiting backlog",
    )
    p.add_argument(
        "--older-than",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="only jobs finished (waiting: posted) longer ago than this, e.g. 30s, 15m, 2h, 1d "
        "(required for finished states)",
    )
    p.add_argument("--flow", help="with --state waiting: only jobs of this flow")
    p.add_argument(
        "--force", action="store_true", help="with --state waiting: really cancel waiting jobs"
    )

    p = add("pause", as_json)
    p.add_argument("flow", metavar="FLOW", nargs="?", help="flow to pause (none: list paused)")
    p.add_argument("--reason", help="why (shown by stats, watch and pause)")
    p = add("resume")
    p.add_argument("flow", metavar="FLOW", help="paused flow to resume")

    p = add("export")
    p.add_argument(
        "--since",
        type=_parse_since,
        default=None,
        metavar="WHEN",
        help="executions started since: a duration ago (2h), ISO time or epoch",
    )
    p.add_argument("--format", choices=["jsonl"], default="jsonl", help="output format")
    p.add_argument("--flow", help="only jobs of this flow")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    add("stats", as_json)
    schedule_cmd.add_arguments(add("schedule"))
    for name in web_commands.COMMANDS:
        web_commands.add_arguments(name, add(name))
    envopts.from_environment(parser, ENV_PREFIXES[0])
    return parser


# -- main -----------------------------------------------------------------------


def _classify(err: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message (``refused: ...``, ``error: ...``) for an error."""
    if isinstance(err, CliError):
        label = "refused" if err.code == EXIT_REFUSED else "error"
        return err.code, f"{label}: {err}"
    if isinstance(err, errors.BadURL | errors.InvalidJob):
        return EXIT_USAGE, f"error: {err}"
    if isinstance(err, errors.BoardUnavailable):
        return EXIT_UNAVAILABLE, f"error: board unreachable: {err}"
    if isinstance(err, errors.BoardError):  # not found, wrong state, claim refused
        return EXIT_REFUSED, f"refused: {err}"
    if isinstance(err, ImportError):
        return EXIT_USAGE, f"error: the backend for this URL is not installed: {err}"
    if isinstance(err, ConnectionError | TimeoutError | OSError):
        return EXIT_UNAVAILABLE, f"error: board unreachable: {err}"
    return EXIT_REFUSED, f"error: unexpected {type(err).__name__}: {err} (-v for details)"


def _run(args: argparse.Namespace) -> int:
    """Open the board, run the chosen command on it and close the board."""
    url = envopts.board_url(args, ENV_PREFIXES)
    if not url:
        raise CliError(
            f"no board: pass --board URL or --board-file PATH, or set {ENV_BOARD}", EXIT_USAGE
        )
    args.board_url = url
    board = jobboard.connect(url)
    try:
        return _COMMANDS[args.command].run(board, args)
    finally:
        try:
            board.close()
        except Exception:  # noqa: BLE001 - closing must not hide the command's outcome
            log.debug("closing the board failed", exc_info=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the admin tool; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed by argparse
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    elif not logging.getLogger().handlers:
        # Library warnings would add lines to the one-line error contract: -v shows them.
        logging.getLogger().addHandler(logging.NullHandler())
    try:
        return _run(args)
    except KeyboardInterrupt:
        sys.stderr.write("jobboard: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``jobboard list | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - every failure ends as one line and a code
        code, message = _classify(err)
        message = envopts.scrub(message, getattr(args, "board_url", None))
        log.debug("command failed", exc_info=True)
        line = render.printable(" ".join(message.split()))
        sys.stderr.write(f"jobboard: {errors.capped(line, ERROR_LINE_LIMIT)}\n")
        return code
