"""Finishing a job and storing progress: the backend hooks, and two optional parts.

:class:`Finishing` is part of :class:`~jobboard.base.JobBoard`: the hooks a
backend implements to write progress and to end a job (fenced, atomically),
the default of ``consume``'s last progress records (saved, then the job
ended; a backend that can do both in one atomic write overrides it), and
``stop_waiting``, which only a backend that queues idle waiters needs. Also
:class:`ConsumedNext`, what ``consume_and_claim_next`` returns, and its
two-step default (a backend that can do both in one atomic call overrides it).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Mapping
from typing import NamedTuple

from jobboard import errors
from jobboard.changes import Ending
from jobboard.model import Claim, Job

__all__ = ["ConsumedNext", "Finishing"]

log = logging.getLogger("jobboard")


class ConsumedNext(NamedTuple):
    """What ``consume_and_claim_next`` returns: the consumed job, then the next
    claim (``None`` when nothing was claimable or the claim step failed), then the
    claim step's error (``None`` unless it failed after the consume went through:
    the job stays consumed; ``claim_next`` again later, as after any claim error)."""

    job: Job
    claim: Claim | None
    claim_error: errors.BoardError | None = None


class Finishing(abc.ABC):
    """Progress and finishing hooks, with the defaults of the optional parts."""

    @abc.abstractmethod
    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        """Write the encoded progress record if ``who``/``token`` hold the claim."""

    @abc.abstractmethod
    def _finish(self, end: Ending) -> Job:
        """End an unfinished job as ``end`` says, fenced unless ``end.force``.

        Counts and publishes ``end.event``, forgets the local claim and
        returns the finished job.
        """

    def _finish_with_progress(self, end: Ending, progress: Mapping[str, str]) -> Job:
        """Store encoded progress records, then finish as ``_finish``; a backend that
        can do both in one atomic write overrides this."""
        assert end.token is not None
        for atom_name, encoded in progress.items():
            self._store_progress(end.job_id, end.who, end.token, atom_name, encoded)
        return self._finish(end)

    def _finish_and_claim_next(
        self,
        end: Ending,
        progress: Mapping[str, str] | None,
        flows: Collection[str] | None,
        lease: float | None,
    ) -> ConsumedNext:
        """End the job as ``_fenced_end`` would, then claim as ``claim_next``: two steps.
        A backend that can do both in one atomic call overrides this."""
        return self._then_claim_next(self._fenced_end(end, progress), end.who, flows, lease)

    def _then_claim_next(
        self, finished: Job, who: str, flows: Collection[str] | None, lease: float | None
    ) -> ConsumedNext:
        """``claim_next`` after ``finished`` was consumed; its error is told, not raised."""
        try:
            return ConsumedNext(finished, self.claim_next(who, flows, lease=lease))
        except errors.BoardError as err:
            log.info("claiming after consuming job %r failed: %s", finished.id, err)
            return ConsumedNext(finished, None, err)

    @abc.abstractmethod
    def _fenced_end(self, end: Ending, progress: Mapping[str, str] | None = None) -> Job:
        """See :meth:`jobboard.base.JobBoard._fenced_end`."""

    @abc.abstractmethod
    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        """See :meth:`jobboard.base.JobBoard.claim_next`."""

    def stop_waiting(self) -> None:
        """Tell the board this process stops waiting for work (a conductor that stops
        claiming). A backend that wakes only some idle waiters per new job (to avoid
        a thundering herd) hands this one's turn to the next; others do nothing."""
        return None
