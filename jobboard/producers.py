"""What the contract offers producers beyond ``post``: results, children and a record store.

:class:`Producing` is part of :class:`~jobboard.base.JobBoard`:

* ``wait_for(job, timeout)`` blocks until a job finishes and returns it. It is
  written once, here, on top of one per-backend hook, :meth:`Producing._watch_job`,
  that calls back when something about the job may have changed (a pushed
  event, a ZooKeeper watch, SQLite's change watcher); a slow safety re-check
  (:attr:`Producing.WAIT_FOR_RECHECK`) covers a push lost to a broken link.
* ``children(job)`` and ``iterjobs(parent=...)`` list the jobs a job posted.
* ``put_schedule`` / ``get_schedules`` / ``remove_schedule``: a small store of
  named, versioned JSON records with compare-and-set writes, on which periodic
  schedules are kept.
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from jobboard import errors
from jobboard.checks import BoardChecks
from jobboard.claimview import LocalClaims
from jobboard.model import BoardEvent, Job, JobRef, JobState, Versioned

__all__ = ["Producing"]

log = logging.getLogger("jobboard.base")


class Producing(LocalClaims, BoardChecks, abc.ABC):
    """Waiting for results, listing children, and the versioned record store."""

    #: Seconds between safety re-reads of a job ``wait_for`` waits on (pushes wake it sooner).
    WAIT_FOR_RECHECK: ClassVar[float] = 3.0

    @abc.abstractmethod
    def get(self, job: JobRef) -> Job:
        """Read one job (see :class:`~jobboard.base.JobBoard`)."""

    @abc.abstractmethod
    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        """The jobs in ``wanted`` states (see :class:`~jobboard.base.JobBoard`)."""

    # -- waiting for a result -------------------------------------------------

    def wait_for(self, job: JobRef, timeout: float | None = None) -> Job:
        """Block until the job is finished and return it (complete, failed, trashed
        or cancelled, with its result or reason).

        Woken by the backend's push about the job, never by a busy poll.
        Raises :class:`~jobboard.errors.WaitTimeout` (carrying the job as last
        read) when ``timeout`` seconds pass first, and ``JobNotFound`` when the
        job does not exist (or was purged meanwhile). Anyone may wait.
        """
        job_id = self._job_id(job)
        limit = self._wait_limit(timeout, job_id)
        deadline = None if limit is None else time.monotonic() + limit
        changed = threading.Event()
        stop = self._watch_job(job_id, changed.set)
        try:
            while True:
                changed.clear()  # before the read: a change after it wakes the wait below
                current = self.get(job_id)
                if current.state.finished:
                    return current
                pause = self.WAIT_FOR_RECHECK
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise errors.WaitTimeout(
                            f"job {job_id!r} is still {current.state.value} after "
                            f"{limit:g}s of waiting",
                            job=current,
                        )
                    pause = min(pause, remaining)
                changed.wait(pause)
        finally:
            stop()

    def _watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` whenever something about ``job_id`` may have changed, until
        the returned function is called. This default follows the board's events
        (backends whose events cross processes); others override it."""

        def follow(event: BoardEvent) -> None:
            if event.job_id in (job_id, None):
                wake()

        self.add_listener(follow)
        return lambda: self.remove_listener(follow)

    # -- children ---------------------------------------------------------------

    def children(self, job: JobRef) -> list[Job]:
        """Every job (any state, until retention removes it) posted with
        ``parent=job``, in claim order."""
        return self._children(self._job_id(job), frozenset(JobState), None)

    def _children(
        self, parent_id: str, wanted: frozenset[JobState], flow: str | None
    ) -> list[Job]:
        """The children of a job in ``wanted`` states. This default reads a listing
        and filters it; backends with an index per parent override it."""
        return [j for j in self._list_jobs(wanted, flow, True) if j.parent == parent_id]

    # -- the versioned record store ------------------------------------------------

    def put_schedule(
        self, name: str, record: Mapping[str, Any], expect_version: int | None = None
    ) -> int:
        """Store the JSON ``record`` under ``name``; return its new version.

        Compare-and-set, atomically: with ``expect_version=None`` the name must
        be new (the first version is 1); otherwise the stored version must be
        ``expect_version`` and becomes the next one. Anything else raises
        :class:`~jobboard.errors.VersionConflict` and changes nothing.
        """
        self._check_text(name, "name", name)
        self._check_version(expect_version, name)
        if not isinstance(record, Mapping):
            raise errors.InvalidJob(
                f"schedule {name!r}: field 'record' must be a JSON object",
                field="record",
                job=name,
            )
        encoded = self._encode(dict(record), "record", name)
        return self._put_schedule(name, encoded, expect_version)

    def get_schedules(self) -> dict[str, Versioned]:
        """Every stored record: ``{name: (record, version)}``. A record that cannot be
        read is left out (and logged), never raised."""
        out: dict[str, Versioned] = {}
        for name, (encoded, version) in sorted(self._get_schedules().items()):
            try:
                record = json.loads(encoded)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                log.warning("%r: schedule %r is unreadable (%s); skipped", self, name, err)
                continue
            out[name] = Versioned(record, version)
        return out

    def remove_schedule(self, name: str, expect_version: int | None = None) -> bool:
        """Delete the record ``name``; True if it existed. With ``expect_version``
        the stored version must match (else ``VersionConflict``, nothing deleted)."""
        self._check_text(name, "name", name)
        self._check_version(expect_version, name)
        return self._remove_schedule(name, expect_version)

    @abc.abstractmethod
    def _put_schedule(self, name: str, encoded: str, expect_version: int | None) -> int:
        """Compare-and-set one record, atomically; return the new version."""

    @abc.abstractmethod
    def _get_schedules(self) -> dict[str, tuple[str, int]]:
        """Every record as ``{name: (JSON text, version)}``."""

    @abc.abstractmethod
    def _remove_schedule(self, name: str, expect_version: int | None) -> bool:
        """Delete one record (version-checked when asked), atomically."""

    @staticmethod
    def _conflict(
        name: str, expect_version: int | None, current: int | None
    ) -> errors.VersionConflict:
        """The error of a compare-and-set that found ``current`` (None: no record)."""
        wanted = "no record" if expect_version is None else f"version {expect_version}"
        found = "none" if current is None else f"version {current}"
        return errors.VersionConflict(
            f"schedule {name!r}: expected {wanted}, found {found}; read it again and retry"
        )
