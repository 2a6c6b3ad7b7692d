"""Finishing a job and storing progress: the backend hooks, and two optional parts.

:class:`Finishing` is part of :class:`~jobboard.base.JobBoard`: the hooks a
backend implements to write progress and to end a job (fenced, atomically),
the default of ``consume``'s last progress records (saved, then the job
ended; a backend that can do both in one atomic write overrides it), and
``stop_waiting``, which only a backend that queues idle waiters needs.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

from jobboard.changes import Ending
from jobboard.model import Job

__all__ = ["Finishing"]


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

    def stop_waiting(self) -> None:
        """Tell the board this process stops waiting for work (a conductor that stops
        claiming). A backend that wakes only some idle waiters per new job (to avoid
        a thundering herd) hands this one's turn to the next; others do nothing."""
        return None
