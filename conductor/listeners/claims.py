"""A listener that checks, on every transition and before every task, that the job is still ours.

The conductor attaches it after claiming a job.  On each flow, task and
retry transition, and right before each task's ``execute`` (a start guard of
the engine), it calls :meth:`CheckingClaimListener._claim_lost`; when the
claim is gone it calls ``on_job_loss(engine, state, details)`` once (by
default ``engine.suspend()``, so running tasks finish, nothing is reverted and
the new owner resumes from the saved progress).  Once the loss is known no
task of the job starts: the guard refuses it.  Even without the listener, the
next fenced progress save of a stale owner fails and stops the engine.

A claim that stays *uncertain* (a suspended ZooKeeper connection) is trusted
only for the bound its board gives (``board.uncertain_claim_bound()``,
counted from ``board.claim_uncertain_since(job)``); past it the listener acts
as if the claim were lost, because another owner may already hold it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conductor.listeners.base import Listener
from conductor.types.notifier import ANY

if TYPE_CHECKING:
    from conductor.engines.action_engine.engine import ActionEngine

__all__ = ["CheckingClaimListener"]

LOG = logging.getLogger(__name__)

JobLossHandler = Callable[[Any, str, dict[str, Any]], Any]

#: The ``state`` passed to ``on_job_loss`` when the start guard found the loss.
BEFORE_START = "BEFORE_START"


def _suspend_engine(engine: ActionEngine, state: str, details: dict[str, Any]) -> None:
    engine.suspend()


class CheckingClaimListener(Listener):
    """Reacts when the job being run is no longer claimed by ``owner`` on ``board``.

    ``on_job_loss`` takes three positional arguments: the engine, the state
    and the details of the transition that revealed the loss (state
    ``BEFORE_START`` with the task's name when a task was about to start).
    """

    def __init__(
        self,
        engine: ActionEngine,
        job: Any,
        board: Any,
        owner: str,
        on_job_loss: JobLossHandler | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        report: bool = True,
    ):
        super().__init__(engine)
        self._job = job
        self._board = board
        self._owner = owner
        self._on_job_loss = on_job_loss or _suspend_engine
        self._job_id = getattr(job, "id", None) or getattr(job, "job_id", None) or str(job)
        self._clock = clock
        # Looked up once: these run on every transition of the job.
        self._status_of: Callable[[str], Any] | None = getattr(board, "claim_status", None)
        self._cancel_of: Callable[[str], bool] | None = getattr(board, "cancel_requested", None)
        # A conductor reports cancels and losses itself, once per job: then these are DEBUG.
        self._level = logging.INFO if report else logging.DEBUG
        self._cancel_sent = False
        self._loss_reported = False

    def register(self) -> None:
        """Attach the receivers and the engine's start guard.

        Unless a subclass changes a receiver, one callback per notifier hears
        every flow, task and retry transition (no per-kind filtering per event).
        """
        if self._registrations:
            return
        if self._own_receivers():
            engine = self._engine
            for notifier in (engine.notifier, engine.atom_notifier):
                notifier.register(ANY, self._check)
                self._registrations.append((notifier, ANY, self._check, None))
        else:
            super().register()
        self._engine.add_start_guard(self._may_start)

    @classmethod
    def _own_receivers(cls) -> bool:
        return all(
            getattr(cls, name) is getattr(CheckingClaimListener, name)
            for name in ("_flow_receiver", "_task_receiver", "_retry_receiver")
        )

    def deregister(self) -> None:
        """Detach the receivers and the start guard."""
        self._engine.remove_start_guard(self._may_start)
        super().deregister()

    def claim_gone(self) -> str | None:
        """Why the claim can no longer be trusted (``"lost"``, ``"uncertain too long"``), or None.

        With a :class:`jobboard.JobBoard` this is a local call (the lease
        deadline, pushed claim-loss events and the connection state): no round
        trip. Other boards are asked with ``find_owner``.
        """
        status = self._status_of
        if status is None:
            return "lost" if self._board.find_owner(self._job) != self._owner else None
        value = status(self._job_id)
        if value == "lost":
            return "lost"
        if value == "uncertain" and self._uncertain_too_long():
            return "uncertain too long"
        return None

    def _uncertain_too_long(self) -> bool:
        bound_of = getattr(self._board, "uncertain_claim_bound", None)
        since_of = getattr(self._board, "claim_uncertain_since", None)
        if bound_of is None or since_of is None:
            return False
        bound, since = bound_of(), since_of(self._job_id)
        return bound is not None and since is not None and self._clock() - since >= bound

    def _claim_lost(self, state: str, details: dict[str, Any]) -> bool:
        """Whether the job is no longer ours (see :meth:`claim_gone`)."""
        return self.claim_gone() is not None

    def _cancel_requested(self) -> bool:
        """Whether a cancel of the job has reached this process (pushed, local)."""
        check = self._cancel_of
        return check is not None and bool(check(self._job_id))

    def _check(self, state: str, details: dict[str, Any]) -> bool:
        """Act on a cancel or a loss; true if the job may go on."""
        if not self._cancel_sent and self._cancel_requested():
            self._cancel_sent = True
            LOG.log(
                self._level,
                "job %s: cancel requested; stopping at transition to %s",
                self._job_id,
                state,
            )
            self._engine.cancel(f"job {self._job_id} was cancelled")
        if not self._claim_lost(state, details):
            return True
        if not self._loss_reported:
            self._loss_reported = True
            LOG.log(
                logging.WARNING if self._level == logging.INFO else logging.DEBUG,
                "job %s is no longer claimed by %s (noticed at %s)",
                self._job_id,
                self._owner,
                state,
            )
            self._on_job_loss(self._engine, state, details)
        return False

    def _may_start(self, task_name: str) -> bool:
        return self._check(BEFORE_START, {"task_name": task_name}) and not self._cancel_sent

    def _flow_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)

    def _task_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)

    def _retry_receiver(self, state: str, details: dict[str, Any]) -> None:
        self._check(state, details)
