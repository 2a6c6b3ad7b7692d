"""Parents and children: cancelling a job cancels its unfinished children too.

Built on the contract alone (``cancel`` and ``children``), so it works on
every backend. The admin tool's ``cancel`` and a conductor acting on a
parent's cancel both use it: a parent cancelled while waiting, scheduled or
running takes its unfinished children (and theirs) with it.
"""

from __future__ import annotations

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.model import Job, JobRef

__all__ = ["MAX_DEPTH", "cancel_children", "cancel_family"]

#: Deepest generation of descendants a cascade reaches.
MAX_DEPTH = 16


def cancel_children(board: JobBoard, job: JobRef, depth: int = MAX_DEPTH) -> list[Job]:
    """Cancel every unfinished descendant of ``job``; returns them as the cancel left them.

    A child that finished meanwhile is skipped; a claimed child is flagged
    and its own conductor stops it.
    """
    touched: list[Job] = []
    for child in board.children(job):
        if depth > 0:
            touched.extend(cancel_children(board, child, depth - 1))
        if child.state.finished:
            continue
        try:
            touched.append(board.cancel(child))
        except (errors.InvalidState, errors.JobNotFound):
            continue  # finished or purged between the listing and the cancel
    return touched


def cancel_family(board: JobBoard, job: JobRef) -> tuple[Job, list[Job]]:
    """Cancel ``job`` and then its unfinished descendants: ``(job after, children after)``."""
    after = board.cancel(job)
    return after, cancel_children(board, job)
