"""A claimed job's progress on the board: finished tasks, and how far the running ones are.

:class:`BoardProgress` is the engine's progress backend for one claim.  Every
write goes through the board's fenced ``save_progress`` under the claim's
token, so a stale owner changes nothing.  Two kinds of record share the job's
progress, one per task:

* a **finished** record (``SUCCESS``, ``FAILURE``, ``REVERTED``...) saved by
  the engine; only ``SUCCESS`` ones are taken on a resume;
* a **running** record (state ``RUNNING``) that tells operators which task
  runs, as "task N of M", with its latest progress report::

    {"state": "RUNNING", "result": null, "failure": null, "execution": null,
     "task_number": N, "task_count": M,
     "progress": {"fraction": 0.4, "message": "...", "details": {...},
                  "updated_at": <unix time>} or null,
     "metadata": {"conductor": ..., "owner": ..., "token": ..., "started_at": <unix time>}}

  A resume ignores it (it is not ``SUCCESS``), and the task's finished record
  replaces it.

Running records are rate-limited: at most one write per job every
:attr:`BoardProgress.MIN_INTERVAL` seconds, the latest report wins, and the
conductor's heartbeat calls :meth:`BoardProgress.flush` to write what waited.
A task that runs longer than :attr:`BoardProgress.ANNOUNCE_AFTER` without
reporting gets a running record anyway, so long tasks are never invisible.
One lock orders the writes, so a late running record never replaces a
finished one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from conductor import states
from conductor.logfields import job_logger
from jobboard import BoardError, Claim, InvalidState, JobBoard, NotOwner

__all__ = ["BoardProgress"]

LOG = logging.getLogger(__name__)

#: ``position(task_name) -> (n, m)``: the task is the n-th of the flow's m atoms.
Position = Callable[[str], tuple[int, int]]


class BoardProgress:
    """The engine's progress backend for one claim (see the module docstring)."""

    #: Shortest time between two running-record writes of one job, in seconds.
    MIN_INTERVAL: ClassVar[float] = 0.5
    #: A task running this long without a report is announced with an empty one.
    ANNOUNCE_AFTER: ClassVar[float] = 1.0

    def __init__(
        self,
        board: JobBoard,
        claim: Claim,
        records: Mapping[str, dict[str, Any]],
        conductor: str,
        on_saved: Callable[[str, Mapping[str, Any]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        log_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.board = board
        self.job_id = claim.job_id
        self.owner = claim.owner
        self.token = claim.token
        self.records = dict(records)
        self.conductor = conductor
        self.on_saved = on_saved
        self.position: Position | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._last_write = -float("inf")
        self._started: dict[str, tuple[float, float]] = {}  # task -> (monotonic, unix) start
        self._pending: dict[str, dict[str, Any] | None] = {}  # task -> latest report
        self._written: set[str] = set()  # tasks whose running record is on the board
        #: The last task's finished record, kept to be stored with the consume.
        self._held: dict[str, dict[str, Any]] = {}
        #: True once a running-record write was refused for a lost claim: no more tries.
        self.closed = False
        self.log = job_logger(LOG, log_fields or {"job_id": self.job_id, "conductor": conductor})

    # -- the ProgressBackend protocol ----------------------------------------

    def load(self) -> Mapping[str, dict[str, Any]]:
        """The records loaded when the job was claimed."""
        return self.records

    def save(self, atom_name: str, record: dict[str, Any]) -> None:
        """Save a finished task's record (fenced); it replaces the task's running record."""
        record = {**record, "metadata": self._metadata(record.get("metadata"))}
        with self._lock:
            self._held.pop(atom_name, None)  # e.g. reverted after it was kept
            self._started.pop(atom_name, None)
            self._pending.pop(atom_name, None)
            self._written.discard(atom_name)
            self.board.save_progress(self.job_id, self.owner, self.token, atom_name, record)
        self.on_saved(atom_name, record)

    def hold(self, atom_name: str, record: dict[str, Any]) -> bool:
        """Keep the flow's last finished record (no task starts after it) to be stored
        in the same fenced write as the consume (:meth:`take_held`); the engine
        calls it instead of :meth:`save` for the last task that succeeds."""
        record = {**record, "metadata": self._metadata(record.get("metadata"))}
        with self._lock:
            self._started.pop(atom_name, None)
            self._pending.pop(atom_name, None)
            self._written.discard(atom_name)
            self._held[atom_name] = record
        return True

    def take_held(self) -> dict[str, dict[str, Any]]:
        """The records kept by :meth:`hold`, handed over (to ``consume(progress=...)``)."""
        with self._lock:
            held, self._held = self._held, {}
        return held

    def saved_with_outcome(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Records stored by the consume: tell as :meth:`save` would have."""
        for atom_name, record in records.items():
            self.on_saved(atom_name, record)

    def save_held(self, taken: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Save the kept records (and ``taken`` ones handed back) now, for an outcome
        other than a consume that carries them; best effort."""
        for atom_name, record in {**(taken or {}), **self.take_held()}.items():
            try:
                self.board.save_progress(self.job_id, self.owner, self.token, atom_name, record)
            except BoardError as err:
                LOG.info("job %s: progress of %s not saved: %s", self.job_id, atom_name, err)
                continue
            self.on_saved(atom_name, record)

    # -- running tasks -------------------------------------------------------

    def task_moved(self, state: str, details: Mapping[str, Any]) -> None:
        """Engine atom notifications: remember when each task started running."""
        name = details.get("task_name")
        if not isinstance(name, str):
            return
        with self._lock:
            if state == states.RUNNING:
                self._started[name] = (self._clock(), time.time())
            elif state not in states.SAVED_ATOM_STATES:
                self._started.pop(name, None)
                self._pending.pop(name, None)

    def report(self, task: str, progress: dict[str, Any]) -> None:
        """A task's progress report: written now if the rate allows, else kept (latest wins)."""
        with self._lock:
            if task not in self._started:
                self._started[task] = (self._clock(), time.time())
            self._pending[task] = {**progress, "updated_at": time.time()}
        self.flush()

    def flush(self) -> None:
        """Write the reports that waited and announce long silent tasks (the heartbeat calls it)."""
        with self._lock:
            now = self._clock()
            if self.closed or now - self._last_write < self.MIN_INTERVAL:
                return
            due = dict(self._pending)
            for task, (started, _) in self._started.items():
                if task not in due and task not in self._written and now - started >= self.ANNOUNCE_AFTER:
                    due[task] = None
            if not due:
                return
            self._pending.clear()
            self._last_write = now
            for task, progress in due.items():
                if task not in self._started:
                    continue  # finished meanwhile: its finished record stands
                try:
                    self.board.save_progress(
                        self.job_id, self.owner, self.token, task, self._running(task, progress)
                    )
                except (NotOwner, InvalidState) as err:  # the claim is gone: stop writing
                    self.closed = True
                    self.log.info("job %s: progress of %s not saved: %s", self.job_id, task, err)
                    return
                except BoardError as err:  # progress is best effort; the claim check acts on loss
                    self.log.info("job %s: progress of %s not saved: %s", self.job_id, task, err)
                    continue
                self._written.add(task)

    def _running(self, task: str, progress: dict[str, Any] | None) -> dict[str, Any]:
        number, count = self.position(task) if self.position is not None else (None, None)
        metadata = self._metadata({"started_at": self._started[task][1]})
        return {
            "state": states.RUNNING,
            "result": None,
            "failure": None,
            "execution": None,
            "task_number": number,
            "task_count": count,
            "progress": progress,
            "metadata": metadata,
        }

    def _metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            **(metadata or {}),
            "conductor": self.conductor,
            "owner": self.owner,
            "token": self.token,
        }
