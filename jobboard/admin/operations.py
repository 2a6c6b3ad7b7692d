"""The ``jobboard`` commands that change the board: post, abandon, trash, cancel, retry, purge.

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
from collections.abc import Sequence
from typing import Any

from jobboard import family
from jobboard.admin import render
from jobboard.admin.console import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    echo,
    echo_json,
    find_job,
)
from jobboard.base import JobBoard
from jobboard.errors import WaitTimeout
from jobboard.model import FINISHED_STATES, Job, JobState

__all__ = ["cmd_cancel", "cmd_forced", "cmd_post", "cmd_purge", "cmd_retry"]

_UNFINISHED = [JobState.WAITING, JobState.SCHEDULED, JobState.CLAIMED]

#: The operator's forced writes: command -> (states allowed, warning, past tense).
_FORCED: dict[str, tuple[list[JobState], str, str]] = {
    "abandon": ([JobState.CLAIMED], " It becomes waiting at once.", "abandoned"),
    "trash": (_UNFINISHED, " It will never run again.", "trashed"),
}


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
    sys.stderr.write(f"{question} [y/N] ")
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
    """``cancel``: end a waiting job, or ask a claimed job's conductor to stop it."""
    job = _target(board, args, "cancel", _UNFINISHED, " Its unfinished children are cancelled too.")
    after, kids = family.cancel_family(board, job)
    if after.state is JobState.CANCELLED:
        echo(f"job {job.id} cancelled")
    else:
        echo(f"cancel requested for job {job.id}: {after.owner or 'its owner'} will stop it")
    if kids:
        echo(f"{len(kids)} unfinished child job(s) cancelled with it")
    return EXIT_OK


def cmd_retry(board: JobBoard, args: argparse.Namespace) -> int:
    """``retry``: post an ended job again as a new one and print the new id."""
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
    echo(new.id)
    return EXIT_OK


def cmd_purge(board: JobBoard, args: argparse.Namespace) -> int:
    """``purge``: delete finished jobs that finished longer ago than ``--older-than``."""
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
        echo("nothing to purge")
        return EXIT_OK
    age = render.fmt_duration(args.older_than)
    _confirm(args, f"Purge about {due} {'/'.join(states)} jobs finished over {age} ago?")
    echo(f"purged {board.purge(states, args.older_than)} jobs")
    return EXIT_OK
