"""The ``jobboard`` commands that change the board: post, abandon, trash, cancel, retry,
purge, pause and resume.

Each one that touches existing jobs checks their state first, says what it is
about to do and asks for confirmation (unless ``--yes``); a refusal changes
nothing.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jobboard import errors, family
from jobboard.admin import fleet, render
from jobboard.admin.console import (
    ALL_STATES,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    echo,
    echo_json,
    find_job,
)
from jobboard.admin.listings import paused_flows, retries_of
from jobboard.base import JobBoard
from jobboard.errors import WaitTimeout
from jobboard.model import FINISHED_STATES, Job, JobState

__all__ = [
    "cmd_cancel",
    "cmd_forced",
    "cmd_pause",
    "cmd_post",
    "cmd_purge",
    "cmd_resume",
    "cmd_retry",
    "warn",
]

#: How often ``cancel --force`` looks whether the owner ended the job (seconds).
CANCEL_POLL = 0.1

_UNFINISHED = [JobState.WAITING, JobState.SCHEDULED, JobState.CLAIMED]

#: The operator's forced writes: command -> (states allowed, warning, past tense).
_FORCED: dict[str, tuple[list[JobState], str, str]] = {
    "abandon": ([JobState.CLAIMED], " It becomes waiting at once.", "abandoned"),
    "trash": (_UNFINISHED, " It will never run again.", "trashed"),
}


def warn(text: str) -> None:
    """A warning on stderr: the command still succeeds."""
    sys.stderr.write(f"jobboard: warning: {text}\n")


def _operator() -> str:
    """Who the forced writes and retries are recorded as: ``operator@HOST``."""
    return f"operator@{socket.gethostname()}"


def _describe(job: Job) -> str:
    """A job in one phrase for questions and refusals: id, name, flow, state, owner."""
    owner = f", claimed by {job.owner}" if job.owner else ""
    return f"job {job.id} ({job.name!r}, flow {job.flow}, {job.state}{owner})"


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Ask on stdin; raise a refusal unless the answer is yes (or ``--yes`` was given)."""
    if args.yes:
        return
    sys.stderr.write(f"{render.printable(question)} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n") or not sys.stdin.isatty():
        sys.stderr.write("\n")  # no echoed line break: end the question's line
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed; nothing changed (pass --yes to skip the question)")


def _target(
    board: JobBoard, args: argparse.Namespace, action: str, allowed: Sequence[JobState], risk: str
) -> Job:
    """The job an operation names, once its state allows ``action`` and the operator agreed."""
    job = find_job(board, args.job)
    if job.state not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise CliError(f"cannot {action} {_describe(job)}: it must be {names}")
    _confirm(args, f"{action.capitalize()} {_describe(job)}?{risk}")
    return job


def _load_store(text: str | None) -> dict[str, Any]:
    """The ``--store`` value: a JSON object given inline or as ``@FILE``."""
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


def cmd_post(board: JobBoard, args: argparse.Namespace) -> int:
    """``post``: post a job and print its id (or the job, with ``--json``).

    With ``--wait`` it then waits for the job to finish and prints its result
    (complete) or its reason, exiting 0 when complete, 1 when it failed, was
    trashed or cancelled, and ``EXIT_TIMEOUT`` when ``--timeout`` ran out.
    """
    store = _load_store(args.store)
    job = board.post(
        args.name,
        args.flow,
        store,
        priority=args.priority,
        max_attempts=args.max_attempts,
        key=args.key,
        delay=args.delay,
        not_before=args.not_before,
    )
    if not args.wait:
        if args.json:
            echo_json(job.to_dict())
        else:
            echo(job.id)
    _warn_unserved(board, job.flow)
    if not args.wait:
        return EXIT_OK
    return _wait_and_report(board, job, args)


def _wait_and_report(board: JobBoard, job: Job, args: argparse.Namespace) -> int:
    """``post --wait``: wait for ``job``, print its outcome, return the exit code."""
    try:
        done = board.wait_for(job, timeout=args.timeout)
    except WaitTimeout as err:
        last = err.job or job
        if args.json:
            echo_json(last.to_dict())
        else:
            echo(f"job {job.id} not finished after {args.timeout:g}s: still {last.state}")
        return EXIT_TIMEOUT
    if args.json:
        echo_json(done.to_dict())
    elif done.state is JobState.COMPLETE:
        echo(json.dumps(done.result, sort_keys=True))
    else:
        echo(f"job {done.id} {done.state}: {done.last_error or 'no reason recorded'}")
    return EXIT_OK if done.state is JobState.COMPLETE else EXIT_REFUSED


def _warn_unserved(board: JobBoard, flow: str) -> None:
    """Warn when no live conductor serves ``flow`` or the flow is paused: the job would wait."""
    try:
        rows = fleet.conductor_rows(board.iter_entities(), time.time())
        paused = paused_flows(board)
    except errors.BoardError:
        return  # the job is posted; the check is only advice
    if flow in paused:
        warn(f"flow {flow!r} is paused: the job waits until `jobboard resume {flow}`")
    if not fleet.serving(rows, flow):
        stale = [c for c in rows if c["stale"] and flow in c["flows"]]
        why = f" ({len(stale)} stale)" if stale else ""
        warn(f"no live conductor serves flow {flow!r}{why}: the job waits until one does")


def cmd_forced(board: JobBoard, args: argparse.Namespace) -> int:
    """``abandon`` and ``trash``: forced writes that make the owner's token stale."""
    allowed, risk, done = _FORCED[args.command]
    job = _target(board, args, args.command, allowed, risk)
    who = _operator()
    write = board.abandon if args.command == "abandon" else board.trash
    after = write(job, who, force=True, reason=args.reason or f"{done} by {who}")
    echo(f"job {job.id} {done}: now {after.state}")
    return EXIT_OK


def cmd_cancel(board: JobBoard, args: argparse.Namespace) -> int:
    """``cancel``: end a waiting job, or ask a claimed job's conductor to stop it.

    With ``--force`` a claimed job whose owner has not ended it within
    ``--grace`` seconds is ended as cancelled by the operator (``force_cancel``):
    it never runs again, and its owner's token is stale, so the owner's next
    write fails and its claim check stops the job.
    """
    risk = ""
    if args.force:
        risk = (
            f" If its conductor has not stopped it within {render.fmt_duration(args.grace)},"
            " it is ended as cancelled anyway."
        )
    risk += " Its unfinished children are cancelled too."
    job = _target(board, args, "cancel", _UNFINISHED, risk)
    after, kids = family.cancel_family(board, job)
    if kids:
        echo(f"{len(kids)} unfinished child job(s) cancelled with it")
    if after.state is JobState.CANCELLED:
        echo(f"job {job.id} cancelled")
        return EXIT_OK
    owner = after.owner or "its owner"
    if not args.force:
        echo(f"cancel requested for job {job.id}: {owner} will stop it")
        return EXIT_OK
    ended = _wait_finished(board, job.id, args.grace)
    if ended is not None:
        echo(f"job {job.id} stopped by {owner}: now {ended.state}")
        return EXIT_OK
    who = _operator()
    reason = args.reason or (
        f"cancelled by {who}: {owner} did not stop it within {render.fmt_duration(args.grace)}"
    )
    try:
        ended = board.force_cancel(job, who, reason=reason)
    except errors.InvalidState:  # it ended in the instant before
        ended = board.get(job.id)
        echo(f"job {job.id} stopped by {owner}: now {ended.state}")
        return EXIT_OK
    echo(f"job {job.id} force-cancelled: {owner} did not stop it in time; now {ended.state}")
    return EXIT_OK


def _wait_finished(board: JobBoard, job_id: str, grace: float) -> Job | None:
    """The job once finished, or ``None`` if it is still unfinished after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        job = board.get(job_id)
        if job.state.finished:
            return job
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(CANCEL_POLL, max(0.0, deadline - time.monotonic())))


_RETRIABLE = [JobState.FAILED, JobState.TRASHED, JobState.CANCELLED]


def _repost(board: JobBoard, job: Job, retries: int) -> Job:
    """Post ``job`` again as a new job whose details name the original (``retry_of``)."""
    return board.post(
        job.name,
        job.flow,
        job.store,
        priority=job.priority,
        max_attempts=job.max_attempts,
        details={**job.details, "retry_of": job.id, "retry": retries + 1, "retried_by": _operator()},
    )


def cmd_retry(board: JobBoard, args: argparse.Namespace) -> int:
    """``retry``: post an ended job again as a new one and print the new id.

    A job that was already retried is refused unless ``--again``; the retry
    link is the new job's ``details.retry_of`` (the board never rewrites a
    posted job, so the old one is found by that link). ``--all`` retries every
    matching job of ``--flow`` that ended since ``--since`` and was not retried.
    """
    if args.all:
        return _retry_all(board, args)
    if args.job is None:
        raise CliError("give a JOB to retry, or --all --flow FLOW", EXIT_USAGE)
    job = find_job(board, args.job)
    if job.state not in _RETRIABLE:
        raise CliError(f"cannot retry {_describe(job)}: it must be failed, trashed or cancelled")
    earlier = retries_of(board, job)
    if earlier and not args.again:
        raise CliError(
            f"{_describe(job)} was already retried as {', '.join(j.id for j in earlier)}; "
            "pass --again to post it once more"
        )
    _confirm(args, f"Retry {_describe(job)}? It is posted again as a new job.")
    echo(_repost(board, job, len(earlier)).id)
    return EXIT_OK


def _retry_all(board: JobBoard, args: argparse.Namespace) -> int:
    if args.job is not None:
        raise CliError("give either a JOB or --all, not both", EXIT_USAGE)
    if not args.flow:
        raise CliError("retry --all needs --flow FLOW", EXIT_USAGE)
    states = args.state or [JobState.FAILED.value]
    bad = [s for s in states if JobState(s) not in _RETRIABLE]
    if bad:
        raise CliError(f"retry --all --state must be failed, trashed or cancelled, not {bad[0]}")
    jobs = list(board.iterjobs(states=ALL_STATES, flow=args.flow))
    retries = Counter(
        j.details["retry_of"] for j in jobs if isinstance(j.details.get("retry_of"), str)
    )
    since = args.since if args.since is not None else 0.0
    matching = [j for j in jobs if j.state.value in states and (j.finished_at or 0) >= since]
    due = sorted(
        (j for j in matching if args.again or not retries[j.id]), key=lambda j: j.finished_at or 0
    )
    skipped = len(matching) - len(due)
    note = f" ({skipped} already retried, skipped; --again includes them)" if skipped else ""
    if not due:
        echo(f"nothing to retry{note}")
        return EXIT_OK
    when = f" since {render.fmt_time(args.since)}" if args.since is not None else ""
    _confirm(args, f"Retry {len(due)} {'/'.join(states)} jobs of flow {args.flow}{when}?{note}")
    for job in due:
        echo(_repost(board, job, retries[job.id]).id)
    sys.stderr.write(f"jobboard: retried {len(due)} jobs{note}\n")
    return EXIT_OK


def cmd_purge(board: JobBoard, args: argparse.Namespace) -> int:
    """``purge``: delete finished jobs that finished longer ago than ``--older-than``;
    with ``--state waiting --force``, cancel a waiting backlog instead."""
    states = args.state or sorted(s.value for s in FINISHED_STATES)
    if JobState.WAITING.value in states:
        return _purge_waiting(board, args, states)
    unfinished = [s for s in states if not JobState(s).finished]
    if unfinished:
        raise CliError(
            f"refusing to purge {', '.join(unfinished)} jobs: only finished jobs "
            "(complete, failed, trashed, cancelled) can be purged; a waiting backlog is "
            "cleared with --state waiting --force"
        )
    if args.older_than is None:
        raise CliError("purge needs --older-than DURATION (e.g. 1d)", EXIT_USAGE)
    horizon = time.time() - args.older_than
    due = sum(1 for j in board.iterjobs(states=states) if (j.finished_at or 0) <= horizon)
    if not due:
        echo("nothing to purge")
        return EXIT_OK
    age = render.fmt_duration(args.older_than)
    _confirm(args, f"Purge about {due} {'/'.join(states)} jobs finished over {age} ago?")
    echo(f"purged {board.purge(states, args.older_than)} jobs")
    return EXIT_OK


def _purge_waiting(board: JobBoard, args: argparse.Namespace, states: list[str]) -> int:
    """Clear a waiting backlog: every waiting job (of ``--flow``, posted over
    ``--older-than`` ago) is cancelled at once, never run; retention then
    removes it like any finished job. A job claimed meanwhile gets a cancel
    request, as ``jobboard cancel`` gives it."""
    if states != [JobState.WAITING.value]:
        raise CliError("purge --state waiting cannot be combined with other states", EXIT_USAGE)
    if not args.force:
        raise CliError(
            "only finished jobs are purged; to clear a waiting backlog pass --force "
            "(its jobs are cancelled and never run)"
        )
    horizon = time.time() - (args.older_than or 0.0)
    due = [
        j
        for j in board.iterjobs(states=[JobState.WAITING], flow=args.flow)
        if j.created_at <= horizon
    ]
    if not due:
        echo("nothing to purge")
        return EXIT_OK
    flow = f" of flow {args.flow}" if args.flow else ""
    _confirm(args, f"Cancel {len(due)} waiting jobs{flow}? They will never run.")
    cancelled = requested = 0
    for job in due:
        try:
            after = board.cancel(job)
        except (errors.InvalidState, errors.JobNotFound):
            continue  # ended meanwhile
        if after.state is JobState.CANCELLED:
            cancelled += 1
        else:
            requested += 1
    extra = f"; {requested} were claimed meanwhile and asked to stop" if requested else ""
    echo(f"purged {cancelled} waiting jobs (cancelled){extra}")
    return EXIT_OK


def cmd_pause(board: JobBoard, args: argparse.Namespace) -> int:
    """``pause``: conductors stop claiming jobs of a flow; without FLOW, list paused flows."""
    if args.flow is None:
        paused = board.paused_flows()
        if args.json:
            echo_json({"paused": paused})
        elif not paused:
            echo("no paused flows")
        else:
            for flow in sorted(paused):
                note = paused[flow]
                since = render.fmt_time(note.get("since"))
                echo(f"{flow}  since {since}  by {note.get('by') or '-'}: {note.get('reason') or '-'}")
        return EXIT_OK
    board.pause_flow(args.flow, reason=args.reason, by=_operator())
    waiting = sum(1 for _ in board.iterjobs(states=[JobState.WAITING], flow=args.flow))
    echo(
        f"flow {args.flow} paused: conductors claim none of its jobs until "
        f"`jobboard resume {args.flow}` ({waiting} waiting; running jobs go on)"
    )
    return EXIT_OK


def cmd_resume(board: JobBoard, args: argparse.Namespace) -> int:
    """``resume``: conductors claim jobs of a paused flow again."""
    if board.resume_flow(args.flow):
        echo(f"flow {args.flow} resumed")
    else:
        echo(f"flow {args.flow} was not paused")
    return EXIT_OK
