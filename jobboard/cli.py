"""The ``jobboard`` admin tool: see and steer every job and claim of a board.

``jobboard [--board URL] COMMAND ...`` (the URL may come from ``$CONDUCTOR_BOARD``).
Listings print tables fitted to the terminal (80 columns when unknown) or,
with ``--json``, one JSON document whose schema docs/admin.md describes.
Operations that change the board ask for confirmation unless ``--yes`` and
refuse clearly, changing nothing, when the job is in the wrong state. Every
failure prints one line to stderr and exits with one of the ``EXIT_*`` codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TextIO
from urllib.parse import urlsplit, urlunsplit

import jobboard
from jobboard import errors, render
from jobboard.base import FINISHED_STATES, BoardEvent, Job, JobBoard, JobPriority, JobState

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

#: Success.
EXIT_OK = 0
#: The operation was refused (wrong state, unknown job, not confirmed); nothing changed.
EXIT_REFUSED = 1
#: Bad usage: unknown option, malformed value, bad board URL, invalid job fields.
EXIT_USAGE = 2
#: The board could not be reached (after the backend's retries).
EXIT_UNAVAILABLE = 3
#: Interrupted by Ctrl-C (``watch`` exits 0 instead: quitting is how it ends).
EXIT_INTERRUPTED = 130

#: Environment variable holding the board URL when ``--board`` is not given.
ENV_BOARD = "CONDUCTOR_BOARD"
#: Claims held at least this long (seconds) are flagged ``long``.
LONG_CLAIM = 3600.0
#: Shortest job id prefix accepted in place of a full id.
MIN_PREFIX = 4
#: Rows ``list`` prints unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 100

_ALL_STATES = [s.value for s in JobState]
_UNFINISHED = [JobState.WAITING, JobState.CLAIMED]
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class CliError(Exception):
    """Raised by a command to end with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


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
    if _is_number(text):
        return float(text)
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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _priority(text: str) -> str:
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
  jobboard show 3fa4c2d1            (any unique prefix of a job id)
  jobboard claims --json | jq '.claims[] | select(.suspicious)'
  jobboard post nightly-report --flow reports --store '{{"day": "2024-05-01"}}'
  jobboard trash 3fa4c2d1 --reason "bad input" --yes
  jobboard purge --state complete --older-than 1d
  jobboard --board sqlite:///var/lib/conductor/board.db watch

exit codes: {EXIT_OK} ok, {EXIT_REFUSED} refused operation, {EXIT_USAGE} bad usage, \
{EXIT_UNAVAILABLE} board unreachable
"""

_COMMANDS: list[tuple[str, str, str]] = [
    (
        "list",
        "list jobs",
        "jobboard list\n  jobboard list --state waiting --state claimed "
        "--flow billing --limit 20\n  jobboard list --state failed --json",
    ),
    (
        "show",
        "one job: fields, claim, per-task progress and timings",
        "jobboard show 3fa4c2d1\n  jobboard show 3fa4c2d1e8b94f0c9d1a2b3c4d5e6f70 --json",
    ),
    (
        "claims",
        "every current claim, stale or suspicious ones marked",
        "jobboard claims\n  jobboard claims --long-after 30m --json",
    ),
    (
        "conductors",
        "registered conductors and their heartbeats",
        "jobboard conductors\n  jobboard conductors --json",
    ),
    (
        "watch",
        "live view of counts, claims and events (Ctrl-C quits)",
        "jobboard watch\n  jobboard watch --interval 10s",
    ),
    (
        "post",
        "post a job; prints its id",
        "jobboard post resize-42 --flow images --store '{\"image\": 42}'\n"
        "  jobboard post rebuild --flow index --store @params.json --priority high "
        "--max-attempts 3",
    ),
    (
        "abandon",
        "release a claimed job so another conductor takes it",
        "jobboard abandon 3fa4c2d1\n  jobboard abandon 3fa4c2d1 --reason 'host draining' --yes",
    ),
    (
        "trash",
        "end an unfinished job as trashed (never run again)",
        "jobboard trash 3fa4c2d1 --reason 'poison input' --yes",
    ),
    (
        "cancel",
        "cancel a job (a running one is stopped by its conductor)",
        "jobboard cancel 3fa4c2d1 --yes",
    ),
    (
        "retry",
        "post a failed, trashed or cancelled job again; prints the new id",
        "jobboard retry 3fa4c2d1 --yes",
    ),
    (
        "purge",
        "delete finished jobs older than a duration",
        "jobboard purge --state complete --older-than 1d\n"
        "  jobboard purge --older-than 2w --yes   (every finished state)",
    ),
    (
        "export",
        "task executions as JSON lines, for offline analysis",
        "jobboard export --since 2h --format jsonl > runs.jsonl\n"
        "  jobboard export --since 2024-05-01T00:00:00Z --flow billing -o billing.jsonl",
    ),
    (
        "stats",
        "counts per state and flow, oldest waiting job, counters",
        "jobboard stats\n  jobboard stats --json",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jobboard`` command."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="jobboard",
        description="Inspect and steer the jobs and claims of a job board.",
        epilog=_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument(
        "--board", metavar="URL", default=None, help=f"board URL (default: ${ENV_BOARD})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    # The same options after the subcommand; SUPPRESS keeps the top-level value when absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--board", metavar="URL", default=argparse.SUPPRESS, help="board URL")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (schema in docs/admin.md)")
    confirm = argparse.ArgumentParser(add_help=False)
    confirm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    helps = {name: (text, examples) for name, text, examples in _COMMANDS}

    def add(name: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        text, examples = helps[name]
        return sub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=f"examples:\n  {examples}",
            formatter_class=formatter,
            parents=[common, *parents],
        )

    p = add("list", as_json)
    p.add_argument(
        "--state",
        action="append",
        choices=[*_ALL_STATES, "all"],
        help="only jobs in this state (repeatable; default: all)",
    )
    p.add_argument("--flow", help="only jobs of this flow")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help=f"at most N jobs (0: no limit; default {DEFAULT_LIMIT})",
    )

    p = add("show", as_json)
    p.add_argument("job", metavar="JOB", help="job id or a unique prefix of one")

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
        type=_positive_int,
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

    for name in ("abandon", "trash"):
        p = add(name, confirm)
        p.add_argument("job", metavar="JOB", help="job id or a unique prefix of one")
        p.add_argument("--reason", help="why (recorded as the job's last error)")
    for name in ("cancel", "retry"):
        p = add(name, confirm)
        p.add_argument("job", metavar="JOB", help="job id or a unique prefix of one")

    p = add("purge", confirm)
    p.add_argument(
        "--state",
        action="append",
        choices=_ALL_STATES,
        help="finished state to purge (repeatable; default: every finished state)",
    )
    p.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="only jobs finished longer ago than this, e.g. 30s, 15m, 2h, 1d",
    )

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
    return parser


# -- helpers --------------------------------------------------------------------


def _width() -> int:
    return max(40, shutil.get_terminal_size((render.DEFAULT_WIDTH, 24)).columns)


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _print_json(data: Any) -> None:
    _print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _operator() -> str:
    return f"operator@{socket.gethostname()}"


def redact(url: str) -> str:
    """A board URL without its password, for display."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _find(board: JobBoard, ref: str) -> Job:
    """The job with id ``ref``, or the only job whose id starts with ``ref``."""
    try:
        return board.get(ref)
    except errors.JobNotFound:
        if len(ref) < MIN_PREFIX:
            raise
    matches = [j for j in board.iterjobs(states=_ALL_STATES) if j.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise errors.JobNotFound(f"no job {ref!r} on the board")
    ids = ", ".join(j.id for j in matches[:5])
    raise CliError(f"job id prefix {ref!r} is ambiguous: {ids}", EXIT_USAGE)


def _describe(job: Job) -> str:
    owner = f", claimed by {job.owner}" if job.owner else ""
    return f"job {job.id} ({job.name!r}, flow {job.flow}, {job.state}{owner})"


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Ask on stdin; raise a refusal unless the answer is yes (or ``--yes`` was given)."""
    if args.yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n") or not sys.stdin.isatty():
        sys.stderr.write("\n")  # no echoed line break: end the question's line
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed; nothing changed (pass --yes to skip the question)")


def _require_state(job: Job, allowed: Sequence[JobState], action: str) -> None:
    if job.state not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise CliError(f"cannot {action} {_describe(job)}: it must be {names}")


def _load_store(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    source = "--store"
    if text.startswith("@"):
        source = text[1:]
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as err:
            raise CliError(
                f"cannot read store file {source!r}: {err.strerror}", EXIT_USAGE
            ) from err
    try:
        store = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{source} is not valid JSON: {err}", EXIT_USAGE) from err
    if not isinstance(store, dict):
        raise CliError(f"{source} must be a JSON object, got {type(store).__name__}", EXIT_USAGE)
    return store


# -- listings -------------------------------------------------------------------

_LIST_ORDER = {"claimed": 0, "waiting": 1}


def cmd_list(board: JobBoard, args: argparse.Namespace) -> int:
    states = _ALL_STATES if not args.state or "all" in args.state else args.state
    jobs = list(board.iterjobs(states=states, flow=args.flow))
    # Active jobs first in claim order, then finished ones, most recent first.
    jobs.sort(key=lambda j: (_LIST_ORDER.get(j.state.value, 2), -(j.finished_at or 0)))
    total = len(jobs)
    shown = jobs[: args.limit] if args.limit else jobs
    if args.json:
        _print_json({"jobs": [j.to_dict() for j in shown], "total": total})
        return EXIT_OK
    if not shown:
        _print("no jobs")
        return EXIT_OK
    _print(render.render_jobs(shown, time.time(), _width()))
    if total > len(shown):
        _print(f"(showing {len(shown)} of {total} jobs; --limit 0 shows all)")
    return EXIT_OK


def show_view(board: JobBoard, job: Job, now: float, long_after: float = LONG_CLAIM) -> dict:
    """The ``show --json`` document of one job."""
    claim = None
    if job.state is JobState.CLAIMED:
        claim = render.claim_record(job, now, board.iter_entities(), long_after)
    return {
        "job": job.to_dict(),
        "claim": claim,
        "progress": render.progress_records(board.load_progress(job)),
    }


def cmd_show(board: JobBoard, args: argparse.Namespace) -> int:
    job = _find(board, args.job)
    now = time.time()
    view = show_view(board, job, now)
    if args.json:
        _print_json(view)
    else:
        _print(render.render_show(view, now, _width()))
    return EXIT_OK


def claims_view(board: JobBoard, long_after: float) -> list[dict[str, Any]]:
    """Every claimed job as a ``claims`` record (oldest claim first)."""
    entities = board.iter_entities()
    now = time.time()
    records = [
        render.claim_record(job, now, entities, long_after)
        for job in board.iterjobs(states=[JobState.CLAIMED])
    ]
    records.sort(key=lambda c: -(c["age"] or 0))
    return records


def cmd_claims(board: JobBoard, args: argparse.Namespace) -> int:
    claims = claims_view(board, args.long_after)
    if args.json:
        _print_json({"claims": claims})
    elif not claims:
        _print("no claims")
    else:
        _print(render.render_claims(claims, _width()))
        if any(c["suspicious"] for c in claims):
            legend = (
                "! marks a suspicious claim: expired (lease ran out), unknown-owner (not a "
                "registered conductor), long (held over "
                f"{render.fmt_duration(args.long_after)}), cancel-requested (its owner should "
                "stop it soon)."
            )
            _print("\n" + textwrap.fill(legend, _width()))
    return EXIT_OK


def cmd_conductors(board: JobBoard, args: argparse.Namespace) -> int:
    now = time.time()
    conductors = [render.conductor_record(e, now) for e in board.iter_entities(args.kind)]
    if args.json:
        _print_json({"conductors": conductors})
    elif not conductors:
        _print(f"no registered {args.kind}s")
    else:
        _print(render.render_conductors(conductors, _width()))
    return EXIT_OK


def stats_view(board: JobBoard) -> dict[str, Any]:
    """The ``stats --json`` document."""
    stats = board.stats()
    counters = dict(stats.get("counters") or {})
    states = {s: stats["states"].get(s, 0) for s in _ALL_STATES}
    return {
        "states": states,
        "flows": stats.get("flows", {}),
        "oldest_waiting_age": stats.get("oldest_waiting_age"),
        "counters": counters,
        "claim_losses": counters.get("expired", 0),
        "trashed": counters.get("trashed", states["trashed"]),
        "poison": counters.get("poison", 0),
    }


def cmd_stats(board: JobBoard, args: argparse.Namespace) -> int:
    view = stats_view(board)
    if args.json:
        _print_json(view)
    else:
        _print(render.render_stats(view, _width()))
    return EXIT_OK


def cmd_export(board: JobBoard, args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    handle = None
    if args.output:
        try:
            handle = out = open(args.output, "w", encoding="utf-8")
        except OSError as err:
            raise CliError(f"cannot write {args.output!r}: {err.strerror}", EXIT_USAGE) from err
    count = 0
    try:
        for job in board.iterjobs(states=_ALL_STATES, flow=args.flow):
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


# -- operations -----------------------------------------------------------------


def cmd_post(board: JobBoard, args: argparse.Namespace) -> int:
    store = _load_store(args.store)
    job = board.post(
        args.name, args.flow, store, priority=args.priority, max_attempts=args.max_attempts
    )
    if args.json:
        _print_json(job.to_dict())
    else:
        _print(job.id)
    return EXIT_OK


def _target(
    board: JobBoard, args: argparse.Namespace, action: str, allowed: Sequence[JobState], risk: str
) -> Job:
    """The job an operation names, once its state allows ``action`` and the operator agreed."""
    job = _find(board, args.job)
    _require_state(job, allowed, action)
    _confirm(args, f"{action.capitalize()} {_describe(job)}?{risk}")
    return job


#: The operator's forced writes: command -> (states allowed, warning, past tense).
_FORCED: dict[str, tuple[list[JobState], str, str]] = {
    "abandon": ([JobState.CLAIMED], " It becomes waiting at once.", "abandoned"),
    "trash": (_UNFINISHED, " It will never run again.", "trashed"),
}


def cmd_forced(board: JobBoard, args: argparse.Namespace) -> int:
    """``abandon`` and ``trash``: forced writes that make the owner's token stale."""
    allowed, risk, done = _FORCED[args.command]
    job = _target(board, args, args.command, allowed, risk)
    who = _operator()
    write = board.abandon if args.command == "abandon" else board.trash
    after = write(job, who, force=True, reason=args.reason or f"{done} by {who}")
    _print(f"job {job.id} {done}: now {after.state}")
    return EXIT_OK


def cmd_cancel(board: JobBoard, args: argparse.Namespace) -> int:
    job = _target(board, args, "cancel", _UNFINISHED, "")
    after = board.cancel(job)
    if after.state is JobState.CANCELLED:
        _print(f"job {job.id} cancelled")
    else:
        _print(f"cancel requested for job {job.id}: {after.owner or 'its owner'} will stop it")
    return EXIT_OK


def cmd_retry(board: JobBoard, args: argparse.Namespace) -> int:
    allowed = [JobState.FAILED, JobState.TRASHED, JobState.CANCELLED]
    job = _target(board, args, "retry", allowed, " It is posted again as a new job.")
    new = board.post(
        job.name,
        job.flow,
        job.store,
        priority=job.priority,
        max_attempts=job.max_attempts,
        details={**job.details, "retry_of": job.id, "retried_by": _operator()},
    )
    _print(new.id)
    return EXIT_OK


def cmd_purge(board: JobBoard, args: argparse.Namespace) -> int:
    states = args.state or sorted(s.value for s in FINISHED_STATES)
    unfinished = [s for s in states if not JobState(s).finished]
    if unfinished:
        raise CliError(
            f"refusing to purge {', '.join(unfinished)} jobs: only finished jobs "
            "(complete, failed, trashed, cancelled) can be purged"
        )
    horizon = time.time() - args.older_than
    due = sum(1 for j in board.iterjobs(states=states) if (j.finished_at or 0) <= horizon)
    if not due:
        _print("nothing to purge")
        return EXIT_OK
    age = render.fmt_duration(args.older_than)
    _confirm(args, f"Purge about {due} {'/'.join(states)} jobs finished over {age} ago?")
    _print(f"purged {board.purge(states, args.older_than)} jobs")
    return EXIT_OK


# -- watch ----------------------------------------------------------------------


class Watch:
    """The live view of ``jobboard watch``.

    It redraws after board events (delivered by ``add_listener``), never more
    often than once per ``MIN_GAP`` seconds, and at least every ``interval``
    seconds. Waiting and claimed counts and the claims come from the unfinished
    jobs at each redraw; finished counts come from a full ``stats()`` read
    once per ``interval``, advanced by events in between, so a busy board is
    not scanned on every event. Ctrl-C and SIGTERM only set a flag, which the
    loop reads every ``STOP_CHECK`` seconds.
    """

    #: Shortest time between two redraws (at most four per second).
    MIN_GAP: ClassVar[float] = 0.25
    #: Longest the loop waits without looking for a stop request (seconds; no server call).
    STOP_CHECK: ClassVar[float] = 0.1
    #: Board events kept for the "recent events" panel.
    RECENT_EVENTS: ClassVar[int] = 8
    #: Finished state that each finishing event adds a job to.
    FINISHING: ClassVar[dict[str, str]] = {
        "consumed": "complete",
        "failed": "failed",
        "trashed": "trashed",
        "cancelled": "cancelled",
    }

    def __init__(
        self,
        board: JobBoard,
        out: TextIO,
        *,
        label: str = "",
        interval: float = 5.0,
        long_after: float = LONG_CLAIM,
        width: Callable[[], int] = _width,
        clear: bool = False,
    ) -> None:
        self.board = board
        self.out = out
        self.label = label
        self.interval = max(interval, self.MIN_GAP)
        self.long_after = long_after
        self.width = width
        self.clear = clear
        self.frames = 0
        self._stop = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._events: deque[tuple[float, str, str | None, dict[str, Any]]] = deque(
            maxlen=self.RECENT_EVENTS
        )
        self._finished = {state: 0 for state in self.FINISHING.values()}
        self._full_due = True

    def stop(self) -> None:
        """End ``run`` within ``STOP_CHECK`` seconds.

        It only sets a flag: a signal handler may call it even while the main
        thread holds an event's lock (setting the event from there could deadlock).
        """
        self._stop = True

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop

    def _pause(self, seconds: float, *, until_event: bool) -> None:
        """Wait ``seconds`` (or until a board event), checking for a stop request meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if until_event and self._wake.wait(min(remaining, self.STOP_CHECK)):
                return
            if not until_event:
                time.sleep(min(remaining, self.STOP_CHECK))

    def _on_event(self, event: BoardEvent) -> None:
        with self._lock:
            self._events.appendleft((time.time(), event.kind, event.job_id, dict(event.data)))
            state = self.FINISHING.get(event.kind)
            if state is not None:
                self._finished[state] += 1
            elif event.kind == "purged":
                self._full_due = True
        self._wake.set()

    def snapshot(self, full: bool) -> dict[str, Any]:
        """Read the board once for a frame; ``full`` recounts finished jobs too."""
        if full:
            with self._lock:
                self._full_due = False
                self._finished = dict.fromkeys(self._finished, 0)
            states = self.board.stats()["states"]
            with self._lock:
                for state in self._finished:
                    self._finished[state] += states.get(state, 0)
        active = list(self.board.iterjobs())
        entities = self.board.iter_entities()
        now = time.time()
        claims = [
            render.claim_record(j, now, entities, self.long_after)
            for j in active
            if j.state is JobState.CLAIMED
        ]
        claims.sort(key=lambda c: -(c["age"] or 0))
        with self._lock:
            counts = {
                "waiting": sum(1 for j in active if j.state is JobState.WAITING),
                "claimed": len(claims),
                **self._finished,
            }
            events = list(self._events)
        lines = shutil.get_terminal_size((render.DEFAULT_WIDTH, 24)).lines
        return {
            "board": self.label,
            "now": now,
            "counts": counts,
            "claims": claims,
            "max_claims": max(3, lines - 10 - self.RECENT_EVENTS),
            "events": events,
        }

    def _draw(self, frame: str) -> None:
        prefix = "\x1b[H\x1b[2J" if self.clear else ("\n" if self.frames else "")
        self.out.write(prefix + frame + "\n")
        self.out.flush()

    def run(self, iterations: int = 0) -> int:
        """Redraw until stopped (or after ``iterations`` frames); returns ``EXIT_OK``."""
        self.board.add_listener(self._on_event)
        try:
            next_full = 0.0
            while not self._stop:
                self._wake.clear()
                now = time.monotonic()
                full = self._full_due or now >= next_full
                if full:
                    next_full = now + self.interval
                self._draw(render.render_watch(self.snapshot(full), self.width()))
                drawn = time.monotonic()
                self.frames += 1
                if iterations and self.frames >= iterations:
                    break
                self._pause(next_full - drawn, until_event=True)
                # Events in a burst are drawn together: never more than one frame per MIN_GAP.
                self._pause(drawn + self.MIN_GAP - time.monotonic(), until_event=False)
        finally:
            self.board.remove_listener(self._on_event)
        return EXIT_OK


def cmd_watch(board: JobBoard, args: argparse.Namespace) -> int:
    watch = Watch(
        board,
        sys.stdout,
        label=redact(args.board_url),
        interval=args.interval,
        long_after=args.long_after,
        clear=sys.stdout.isatty(),
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: watch.stop())
    try:
        return watch.run(args.iterations)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- main -----------------------------------------------------------------------

_HANDLERS: dict[str, Callable[[JobBoard, argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "claims": cmd_claims,
    "conductors": cmd_conductors,
    "watch": cmd_watch,
    "post": cmd_post,
    "abandon": cmd_forced,
    "trash": cmd_forced,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "purge": cmd_purge,
    "export": cmd_export,
    "stats": cmd_stats,
}


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
    url = args.board or os.environ.get(ENV_BOARD)
    if not url:
        raise CliError(f"no board: pass --board URL or set {ENV_BOARD}", EXIT_USAGE)
    args.board_url = url
    board = jobboard.connect(url)
    try:
        return _HANDLERS[args.command](board, args)
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
        log.debug("command failed", exc_info=True)
        sys.stderr.write(f"jobboard: {' '.join(message.split())}\n")
        return code
