"""Finishing a job and storing progress: consume, the backend hooks, two optional parts.

:class:`Finishing` is part of :class:`~jobboard.base.JobBoard`: ``consume`` and
``consume_and_claim_next`` (with :class:`ConsumedNext`, what the latter returns),
the hooks a backend implements to write progress and to end a job (fenced,
atomically), the default of ``consume``'s last progress records (saved, then the
job ended) and of ``consume_and_claim_next`` (consumed, then claimed: two steps),
each overridden by a backend that can do both in one atomic write, and
``stop_waiting``, which only a backend that queues idle waiters needs.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from jobboard import errors
from jobboard.changes import Ending
from jobboard.checks import BoardChecks
from jobboard.model import Claim, Job, JobRef, JobState

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


class Finishing(BoardChecks, abc.ABC):
    """Progress and finishing hooks, with the defaults of the optional parts."""

    def consume(
        self,
        job: JobRef,
        who: str,
        token: int,
        *,
        result: Any = None,
        progress: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Job:
        """Finish an owned job as complete with its JSON ``result``. Fenced.

        ``progress`` (``{atom_name: record}``) stores the last progress records
        as ``save_progress`` would, under the same fence: in the finishing write
        itself where the backend can (one transaction on ZooKeeper), else saved
        just before it. A conductor passes the last task's record here.
        """
        return self._fenced_end(*self._consuming(job, who, token, result, progress))

    def consume_and_claim_next(
        self,
        job: JobRef,
        who: str,
        token: int,
        *,
        result: Any = None,
        progress: Mapping[str, Mapping[str, Any]] | None = None,
        flows: Collection[str] | None = None,
        lease: float | None = None,
    ) -> ConsumedNext:
        """``consume``, then, once it went through, ``claim_next(who, flows, lease=lease)``.

        For a worker that takes its next job as soon as one ends: where the backend
        can (Redis) both are one atomic call. The consume is fenced by ``token``
        and raises as ``consume`` does, with no claim made; the new claim has a
        fresh token and is tracked as one from ``claim_next``. Elsewhere the two
        steps run one after the other; a claim step that fails after the consume
        went through is told in :attr:`ConsumedNext.claim_error`, not raised.
        """
        if lease is not None:
            self._lease_for(lease)  # a bad lease is refused before anything is written
        end, records = self._consuming(job, who, token, result, progress)
        if isinstance(flows, str):
            flows = [flows]
        return self._finish_and_claim_next(end, records, flows, lease)

    def _consuming(
        self,
        job: JobRef,
        who: str,
        token: int,
        result: Any,
        progress: Mapping[str, Mapping[str, Any]] | None,
    ) -> tuple[Ending, dict[str, str]]:
        """The checked arguments of a consume: its ending and encoded records."""
        job_id = self._job_id(job)
        result_json = None if result is None else self._encode(result, "result", job_id)
        records = {
            name: self._validate_atom(job_id, name, record)
            for name, record in (progress or {}).items()
        }
        self._check_owner_args(job_id, who, token, False)
        end = Ending(job_id, who, token, JobState.COMPLETE, False, result_json, None, "consumed")
        return end, records

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
