"""Child jobs of a running job: post them once, wait for them while keeping the claim.

A child is posted with ``parent=`` the running job and the dedupe key
``child:<parent id>:<key or name>``. The key depends only on the parent and
the child's own key, so a parent that runs again — resumed by another
conductor after a takeover — gets back the children it already posted
instead of posting them twice.

While a task waits for its children the conductor's heartbeat thread goes on
renewing the parent's claim; the wait looks at the task's cancel state every
:data:`CHECK_EVERY` seconds (a local check) and stops with ``TaskCancelled``
once the parent is cancelled, its claim lost or its conductor shutting down.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine alone never loads the board code
    from jobboard import Job, JobBoard

__all__ = ["CHECK_EVERY", "child_key", "post_child", "wait_for_children"]

#: Longest single board wait between two looks at the task's cancel state (seconds).
CHECK_EVERY = 0.5


#: The running task's ``conductor.context.JobContext`` (typed loosely: it imports this module).
_Context = Any


def _parent(context: _Context, what: str) -> tuple[JobBoard, str]:
    job_id = context.get("job_id")
    if context.board is None or not job_id:
        raise RuntimeError(f"{what} needs a task run by a conductor (no running job here)")
    return context.board, str(job_id)


def child_key(parent_id: str, key: str) -> str:
    """The dedupe key of a child: the same for every run of the parent."""
    return f"child:{parent_id}:{key}"


def post_child(
    context: _Context,
    name: str,
    flow: str,
    store: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    **options: Any,
) -> Job:
    """Post (or find, when this parent posted it before) the child ``key`` (default: ``name``).

    ``options`` are ``post``'s other keywords (``priority``, ``delay``, ...).
    """
    board, parent_id = _parent(context, "post_child")
    return board.post(
        name, flow, store, key=child_key(parent_id, key or name), parent=parent_id, **options
    )


def wait_for_children(context: _Context, timeout: float | None = None) -> list[Job]:
    """Wait until every child of the running job is finished; return them all.

    Raises ``WaitTimeout`` when ``timeout`` seconds pass first, and
    ``TaskCancelled`` as soon as the parent must stop.
    """
    from jobboard import WaitTimeout

    board, parent_id = _parent(context, "wait_for_children")
    deadline = None if timeout is None else time.monotonic() + timeout
    for child in board.children(parent_id):
        while not child.state.finished:
            context.check_cancelled()
            left = CHECK_EVERY if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"job {parent_id}: child {child.id} not finished after {timeout}s", job=child
                )
            try:
                child = board.wait_for(child, timeout=min(left, CHECK_EVERY))
            except WaitTimeout as err:
                child = err.job or child
    context.check_cancelled()
    return list(board.children(parent_id))
