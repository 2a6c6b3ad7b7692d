"""What the ``jobboard`` commands share: exit codes, refusals, output and job lookup."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from jobboard import errors
from jobboard.admin import lookup, render
from jobboard.base import JobBoard
from jobboard.model import Job, JobState

__all__ = [
    "ALL_STATES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "LONG_CLAIM",
    "MIN_PREFIX",
    "CliError",
    "Command",
    "echo",
    "echo_json",
    "find_job",
    "screen_width",
    "terminal_size",
]

#: Success.
EXIT_OK = 0
#: The operation was refused (wrong state, unknown job, not confirmed); nothing changed.
EXIT_REFUSED = 1
#: Bad usage: unknown option, malformed value, bad board URL, invalid job fields.
EXIT_USAGE = 2
#: The board could not be reached (after the backend's retries).
EXIT_UNAVAILABLE = 3
#: ``post --wait`` gave up: the job had not finished within ``--timeout``.
EXIT_TIMEOUT = 4
#: Interrupted by Ctrl-C (``watch`` exits 0 instead: quitting is how it ends).
EXIT_INTERRUPTED = 130

#: Claims held at least this long (seconds) are flagged ``long``.
LONG_CLAIM = 3600.0
#: Shortest job id prefix accepted in place of a full id.
MIN_PREFIX = lookup.MIN_PREFIX
#: Every job state, by value.
ALL_STATES = [s.value for s in JobState]

#: A subcommand: runs on an open board with the parsed arguments, returns the exit code.
Command = Callable[[JobBoard, argparse.Namespace], int]


class CliError(Exception):
    """Raised by a command to end with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def terminal_size() -> os.terminal_size:
    """The terminal's size, or 80x24 when there is no terminal."""
    return shutil.get_terminal_size((render.DEFAULT_WIDTH, 24))


def screen_width() -> int:
    """The width tables are fitted to (at least 40 columns)."""
    return max(40, terminal_size().columns)


def echo(text: str = "") -> None:
    """Print one line (or block) to stdout, control characters escaped."""
    sys.stdout.write(render.printable(text) + "\n")


def echo_json(data: Any) -> None:
    """Print a JSON document to stdout."""
    echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def find_job(board: JobBoard, ref: str) -> Job:
    """The job named by ``ref``: its id, a unique prefix of its id, or its unique name.

    A job whose record cannot be read is found too, as the listings show it
    (marked unreadable), so that an operator can look at it, trash and purge it.
    """
    try:
        return board.get(ref)
    except errors.JobNotFound:
        pass
    except errors.InvalidJob:  # a stored record that cannot be read
        unreadable = [j for j in board.iterjobs(states=ALL_STATES) if j.id == ref]
        if not unreadable:
            raise
        return unreadable[0]
    try:
        return lookup.resolve_job(ref, board.iterjobs(states=ALL_STATES))
    except lookup.AmbiguousJob as err:
        raise CliError(str(err), EXIT_USAGE) from None
