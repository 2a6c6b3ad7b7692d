"""A listener that checks, on every transition, that the job is still ours.

The conductor attaches it after claiming a job.  On each flow, task and
retry transition it calls :meth:`CheckingClaimListener._claim_lost`; when the
claim is gone it calls ``on_job_loss(engine, state, details)`` (by default
``engine.suspend()``, so running tasks finish, nothing is reverted and the
new owner resumes from the saved progress).  Even without it, the next
fenced progress save of a stale owner fails and stops the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conductor.listeners.base import Listener

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["CheckingClaimListener"]

LOG = logging.getLogger(__name__)

JobLossHandler = Callable[[Any, str, dict[str, Any]], Any]


def _suspend_engine(engine: ActionEngine, state: str, details: dict[str, Any]) -> None:
    engine.suspend()


class CheckingClaimListener(Listener):
    """Reacts when the job being run is no longer claimed by ``owner`` on ``board``.

    ``on_job_loss`` takes three positional arguments: the engine, the state
    and the details of the transition that revealed the loss.
    """

    def __init__(
        self,
        engine: ActionEngine,
        job: Any,
        board: Any,
        owner: str,
        on_job_loss: JobLossHandler | None = None,
    ):
        super().__init__(engine)
        self._job = job
        self._board = board
        self._owner = owner
        self._on_job_loss = on_job_loss or _suspend_engine
        self._job_id = getattr(job, "id", None) or getattr(job, "job_id", None) or str(job)
        self._cancel_sent = False

    def _claim_lost(self, state: str, details: dict[str, Any]) -> bool:
        """Whether the job is no longer ours.

        With a :class:`jobboard.JobBoard` this is a local call (the lease
        deadline, pushed claim-loss events and the connection state): no round
        trip. An uncertain claim (suspended connection) counts as still ours;
        fencing rejects any write if it turns out lost. Other boards are asked
        with ``find_owner``.
        """
        status = getattr(self._board, "claim_status", None)
        if status is not None:
            return bool(status(self._job_id) == "lost")
        return bool(self._board.find_owner(self._job) != self._owner)

    def _cancel_requested(self) -> bool:
        """Whether a cancel of the job has reached this process (pushed, local)."""
        check = getattr(self._board, "cancel_requested", None)
        return bool(check is not None and check(self._job_id))

    def _check(self, state: str, details: dict[str, Any]) -> None:
        if self._cancel_requested() and not self._cancel_sent:
            self._cancel_sent = True
            LOG.info("Job %s: cancel requested; stopping at transition to %s", self._job_id, state)
            self._engine.cancel(f"job {self._job_id} was cancelled")
        if not self._claim_lost(state, details):
            return
        LOG.warning(
            "Job %s is no longer claimed by %s (noticed at transition to %s); calling %r",
            self._job,
            self._owner,
            state,
            self._on_job_loss,
        )
        self._on_job_loss(self._engine, state, details)

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)
