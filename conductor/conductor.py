"""The conductor daemon: claim jobs, run them under the claim listener, finish them.

One :class:`Conductor` serves the flows of its registry from one board::

    claim_next ──▶ load progress ──▶ engine.run() under CheckingClaimListener
        │             (resume)            │ every finished task ─▶ save_progress(token)
        │                                 ▼
        └── heartbeat renews every lease ── consume / fail / abandon / trash

Outcomes: success consumes the job with the flow's outputs; a task failure
(after the engine reverted) fails it; a cancel request stops the engine at the
next transition, reverts, and ends the job cancelled; a lost claim or a
stopping conductor suspends the engine and abandons the job so another
conductor resumes it at once; the board trashes a job claimed more than its
``max_attempts`` times (a poison job).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from conductor import engines, exceptions
from conductor.listeners.claims import CheckingClaimListener
from conductor.registry import FlowRegistry, RegistryError
from conductor.types.notifier import Notifier
from jobboard import (
    BoardError,
    BoardUnavailable,
    Claim,
    InvalidJob,
    Job,
    JobBoard,
    NotOwner,
    unique_owner,
)

__all__ = ["Conductor", "ConductorEvents", "RunningJob"]

LOG = logging.getLogger(__name__)

#: Why a job is released when its conductor stops (the attempt is refunded).
SHUTDOWN = "conductor stopping"


class ConductorEvents:
    """Names of the events a conductor's ``notifier`` emits (details: job, conductor...)."""

    CLAIMED = "job_claimed"
    RESUMED = "job_resumed"
    CONSUMED = "job_consumed"
    FAILED = "job_failed"
    CANCELLED = "job_cancelled"
    ABANDONED = "job_abandoned"
    TRASHED = "job_trashed"
    CLAIM_LOST = "claim_lost"
    TASK_DONE = "task_done"
    BOARD_ERROR = "board_error"
    RENEWED = "leases_renewed"

    ALL = (
        CLAIMED,
        RESUMED,
        CONSUMED,
        FAILED,
        CANCELLED,
        ABANDONED,
        TRASHED,
        CLAIM_LOST,
        TASK_DONE,
        BOARD_ERROR,
        RENEWED,
    )


class _BoardProgress:
    """The engine's progress backend, writing through the board under the claim's token."""

    __slots__ = ("board", "job_id", "owner", "token", "records", "conductor", "on_saved")

    def __init__(
        self,
        board: JobBoard,
        claim: Claim,
        records: Mapping[str, dict[str, Any]],
        conductor: str,
        on_saved: Callable[[str, Mapping[str, Any]], None],
    ) -> None:
        self.board = board
        self.job_id = claim.job_id
        self.owner = claim.owner
        self.token = claim.token
        self.records = dict(records)
        self.conductor = conductor
        self.on_saved = on_saved

    def load(self) -> Mapping[str, dict[str, Any]]:
        return self.records

    def save(self, atom_name: str, record: dict[str, Any]) -> None:
        metadata = dict(record.get("metadata") or {})
        metadata["conductor"] = self.conductor
        metadata["owner"] = self.owner
        metadata["token"] = self.token
        record = {**record, "metadata": metadata}
        self.board.save_progress(self.job_id, self.owner, self.token, atom_name, record)
        self.on_saved(atom_name, record)


@dataclass
class RunningJob:
    """A job this conductor is running."""

    claim: Claim
    job: Job
    engine: Any = None
    stop_reason: str | None = None  # why we suspended it: "claim lost", "shutdown"
    cancel_seen: bool = False
    started: float = field(default_factory=time.monotonic)
    future: Future[None] | None = None


class Conductor:
    """Claims jobs of the registered flows from a board and runs them.

    ``flows`` is a :class:`FlowRegistry` or a mapping of name -> factory.
    ``lease`` overrides the board's lease length for this conductor's claims;
    leases are renewed every ``lease * RENEW_FRACTION`` seconds, all in one
    round trip. ``drain_timeout`` bounds a graceful stop.
    """

    #: Renew leases when this fraction of the lease has passed.
    RENEW_FRACTION = 1 / 3
    #: How often to refresh this conductor's registration (seconds).
    ENTITY_REFRESH = 5.0
    #: Longest single block in ``board.wait`` so stop requests are seen promptly.
    IDLE_WAIT = 1.0

    def __init__(
        self,
        name: str,
        board: JobBoard,
        flows: FlowRegistry | Mapping[str, Callable[..., Any]],
        *,
        max_simultaneous_jobs: int = 1,
        engine: str = "serial",
        engine_options: Mapping[str, Any] | None = None,
        lease: float | None = None,
        drain_timeout: float = 30.0,
        on_job_loss: Callable[[Any, str, dict[str, Any]], None] | None = None,
        listeners: tuple[Callable[[Any], Any], ...] = (),
    ) -> None:
        if engine not in ("serial", "parallel"):
            raise ValueError(f"engine must be 'serial' or 'parallel', got {engine!r}")
        if max_simultaneous_jobs < 1:
            raise ValueError("max_simultaneous_jobs must be >= 1")
        self.name = name
        self.board = board
        self.flows = flows if isinstance(flows, FlowRegistry) else FlowRegistry(flows)
        if not len(self.flows):
            raise RegistryError(f"conductor {name!r} has no flows to serve")
        self.owner = unique_owner(name)
        self.max_simultaneous_jobs = max_simultaneous_jobs
        self.engine_kind = engine
        self.engine_options = dict(engine_options or {})
        # None keeps the board's own kind of claim (session-bound on ZooKeeper).
        self._claim_lease = lease
        self.lease = lease if lease is not None else board.lease
        self.drain_timeout = drain_timeout
        self.on_job_loss = on_job_loss
        self.listener_factories = listeners
        self.notifier = Notifier()
        self._flow_names = sorted(self.flows.names())
        self._running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._stopped = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._heartbeat: threading.Thread | None = None
        self.last_heartbeat: float | None = None
        self.stats: dict[str, int] = {k: 0 for k in ConductorEvents.ALL}

    # -- public life cycle --------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until :meth:`stop`; returns after a drained shutdown."""
        self._stopped.clear()
        self._pool = ThreadPoolExecutor(
            self.max_simultaneous_jobs, thread_name_prefix=f"{self.name}-job"
        )
        self._register()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"{self.name}-heartbeat", daemon=True
        )
        self._heartbeat.start()
        LOG.info("conductor %s (%s) serving flows %s", self.name, self.owner, self._flow_names)
        try:
            self._claim_loop()
        finally:
            self._drain()
            self._pool.shutdown(wait=True)
            try:
                self.board.unregister_entity(self.owner)
            except BoardError as err:
                LOG.warning("could not unregister %s: %s", self.owner, err)
            self._stopped.set()
            LOG.info("conductor %s stopped", self.name)

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish within ``timeout`` (default the
        drain timeout), then suspend and abandon the rest. Calling it again
        (a second signal) abandons at once."""
        if self._stopping.is_set():
            self._abort.set()
        elif timeout is not None:
            self.drain_timeout = timeout
        self._stopping.set()
        with self._slot_free:
            self._slot_free.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`run` has returned; True if it has."""
        return self._stopped.wait(timeout)

    @property
    def running_jobs(self) -> list[RunningJob]:
        """A snapshot of the jobs being run."""
        with self._lock:
            return list(self._running.values())

    def healthy(self) -> tuple[bool, str]:
        """(ok, reason): the board is connected and heartbeats are fresh; a board's
        warnings about its server (unsafe persistence or eviction) ride along."""
        if not self.board.connected:
            halted = getattr(self.board, "halted", None)
            return False, f"board refuses to work: {halted}" if halted else "board connection down"
        if self.last_heartbeat is None:
            return False, "no heartbeat yet"
        age = time.monotonic() - self.last_heartbeat
        limit = max(self.lease, self.ENTITY_REFRESH) * 2
        if age > limit:
            return False, f"last heartbeat {age:.1f}s ago"
        warnings = getattr(self.board, "health_warnings", ())
        return True, "; ".join(["ok", *(f"warning: {w}" for w in warnings)])

    # -- the claim loop -----------------------------------------------------

    def _claim_loop(self) -> None:
        flows = self._flow_names
        while not self._stopping.is_set():
            with self._slot_free:
                while (
                    len(self._running) >= self.max_simultaneous_jobs and not self._stopping.is_set()
                ):
                    self._slot_free.wait(self.IDLE_WAIT)
            if self._stopping.is_set():
                break
            try:
                claim = self.board.claim_next(self.owner, flows, lease=self._claim_lease)
            except BoardError as err:
                self._board_error("claim", err)
                self._stopping.wait(min(1.0, self.lease / 4))
                continue
            if claim is None:
                self._wait_for_work(flows)
                continue
            job = claim.job if claim.job is not None else self.board.get(claim.job_id)
            running = RunningJob(claim=claim, job=job)
            with self._lock:
                self._running[claim.job_id] = running
            self._emit(ConductorEvents.CLAIMED, job, token=claim.token)
            assert self._pool is not None
            running.future = self._pool.submit(self._run_job, running)

    def _wait_for_work(self, flows: list[str]) -> None:
        """Block until the board says a job may be waiting (or we stop).

        ``wait`` returning False means nothing became claimable: claiming
        again would only cost a round trip, so an idle conductor just waits
        again (waking every ``IDLE_WAIT`` to notice a stop request).
        """
        while not self._stopping.is_set():
            try:
                if self.board.wait(timeout=self.IDLE_WAIT, flows=flows):
                    return
            except BoardError as err:
                self._board_error("wait", err)
                self._stopping.wait(min(1.0, self.lease / 4))
                return

    # -- one job ------------------------------------------------------------

    def _run_job(self, running: RunningJob) -> None:
        claim, job = running.claim, running.job
        try:
            self._execute(running)
        except Exception:  # noqa: BLE001 - one job must never stop the conductor
            LOG.exception("job %s (flow %s): unexpected error in conductor", job.id, job.flow)
            self._release(running, "conductor error")
        finally:
            with self._slot_free:
                self._running.pop(claim.job_id, None)
                self._slot_free.notify_all()

    def _execute(self, running: RunningJob) -> None:
        claim, job = running.claim, running.job
        board = self.board
        try:
            # Token 1 is the job's first claim ever: no progress can exist yet.
            records = board.load_progress(job.id) if claim.token > 1 else {}
        except BoardError as err:
            self._board_error("load_progress", err)
            self._release(running, f"could not load progress: {err}")
            return
        if records:
            self._emit(
                ConductorEvents.RESUMED,
                job,
                tasks_done=sorted(n for n, r in records.items() if r.get("state") == "SUCCESS"),
            )
        try:
            flow = self.flows.build(job.flow, job)
            progress = _BoardProgress(board, claim, records, self.name, self._task_saved(job))
            engine = engines.load(
                flow,
                store=job.store,
                engine=self.engine_kind,
                progress=progress,
                context={
                    "job_id": job.id,
                    "job_name": job.name,
                    "flow": job.flow,
                    "fencing_token": claim.token,
                    "owner": claim.owner,
                    "conductor": self.name,
                },
                **self.engine_options,
            )
        except Exception as err:  # noqa: BLE001 - bad job input or broken flow factory
            LOG.warning("job %s (flow %s): cannot load: %s", job.id, job.flow, err)
            self._finish_failed(running, f"cannot load flow {job.flow!r}: {err}")
            return
        running.engine = engine
        attached = [factory(engine) for factory in self.listener_factories]
        listener = CheckingClaimListener(
            engine, job, board, claim.owner, on_job_loss=self.on_job_loss or self._on_job_loss
        )
        try:
            for extra in attached:
                extra.__enter__()
            with listener:
                engine.run()
        except exceptions.Cancelled as err:
            self._finish_failed(running, str(err), cancelled=True)
            return
        except NotOwner as err:  # a fenced write was rejected: the claim is gone
            self._claim_lost(running, f"fenced write rejected: {err}")
            return
        except InvalidJob as err:  # a task's record is not storable: retrying cannot help
            self._finish_failed(running, f"progress rejected: {err}")
            return
        except BoardError as err:
            self._board_error("save_progress", err)
            self._release(running, f"board error while running: {err}")
            return
        except Exception as err:  # noqa: BLE001 - task failure (engine already reverted)
            self._finish_failed(running, _describe_failure(err))
            return
        finally:
            for extra in reversed(attached):
                try:
                    extra.__exit__(None, None, None)
                except Exception:  # noqa: BLE001
                    LOG.exception("listener %r failed to detach", extra)
        if running.stop_reason is not None and not _flow_succeeded(engine):
            if running.stop_reason == "claim lost":
                self._claim_lost(running, "claim lost while running")
            else:
                self._release(running, running.stop_reason)
            return
        self._finish_consumed(running, engine)

    def _on_job_loss(self, engine: Any, state: str, details: dict[str, Any]) -> None:
        """Default reaction to a lost claim: suspend; the job is abandoned afterwards."""
        for candidate in self.running_jobs:
            if candidate.engine is engine:
                candidate.stop_reason = "claim lost"
        engine.suspend()

    def _task_saved(self, job: Job) -> Callable[[str, Mapping[str, Any]], None]:
        def saved(atom_name: str, record: Mapping[str, Any]) -> None:
            self._emit(ConductorEvents.TASK_DONE, job, task=atom_name, record=record)

        return saved

    # -- outcomes -----------------------------------------------------------

    def _finish_consumed(self, running: RunningJob, engine: Any) -> None:
        claim, job = running.claim, running.job
        try:
            result = _outputs(engine)
            self.board.consume(job.id, claim.owner, claim.token, result=result)
        except InvalidJob as err:  # e.g. the result is too large or not JSON
            self._finish_failed(running, f"result rejected: {err}")
            return
        except NotOwner as err:
            self._claim_lost(running, f"consume rejected: {err}")
            return
        except BoardError as err:
            self._board_error("consume", err)
            self._release(running, f"consume failed: {err}")
            return
        self._emit(ConductorEvents.CONSUMED, job, token=claim.token)

    def _finish_failed(self, running: RunningJob, error: str, *, cancelled: bool = False) -> None:
        claim, job = running.claim, running.job
        try:
            self.board.fail(job.id, claim.owner, claim.token, error=error, cancelled=cancelled)
        except NotOwner as err:
            self._claim_lost(running, f"fail rejected: {err}")
            return
        except BoardError as err:
            self._board_error("fail", err)
            self._release(running, f"could not record failure: {err}")
            return
        event = ConductorEvents.CANCELLED if cancelled else ConductorEvents.FAILED
        self._emit(event, job, error=error)

    def _claim_lost(self, running: RunningJob, reason: str) -> None:
        LOG.warning("job %s (flow %s): claim lost: %s", running.job.id, running.job.flow, reason)
        self._emit(ConductorEvents.CLAIM_LOST, running.job, reason=reason)
        self._release(running, reason, quiet=True)

    def _release(self, running: RunningJob, reason: str, *, quiet: bool = False) -> None:
        """Abandon the job so another conductor can take it now (not after the lease).

        A release because this conductor stops is not the job's fault: the
        attempt is refunded so restarts never make a job look like poison.
        """
        claim, job = running.claim, running.job
        refund = running.stop_reason == SHUTDOWN
        try:
            self.board.abandon(job.id, claim.owner, claim.token, reason=reason[:500], refund=refund)
        except NotOwner:
            if not quiet:
                LOG.info("job %s: already released (%s)", job.id, reason)
            return
        except BoardError as err:
            # The lease will run out by itself: the job is not lost.
            self._board_error("abandon", err)
            LOG.error("job %s: abandon failed (%s); its lease will expire", job.id, err)
            return
        self._emit(ConductorEvents.ABANDONED, job, reason=reason)

    # -- heartbeat ----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.lease * self.RENEW_FRACTION)
        next_entity = time.monotonic() + self.ENTITY_REFRESH
        while not self._stopped.wait(interval):
            claims = [r.claim for r in self.running_jobs]
            if claims:
                started = time.monotonic()
                try:
                    renewed = self.board.renew(claims, lease=self._claim_lease)
                except BoardError as err:
                    self._board_error("renew", err)
                else:
                    self._emit(
                        None,
                        None,
                        event=ConductorEvents.RENEWED,
                        seconds=time.monotonic() - started,
                        count=len(claims),
                    )
                    for job_id, claim in renewed.items():
                        held = self._running.get(job_id)
                        # A job finished while the renewal was in flight is not a loss.
                        if (
                            claim is None
                            and held is not None
                            and held.engine is not None
                            and self.board.held_claim(job_id) is not None
                        ):
                            LOG.warning("job %s: lease renewal refused; claim lost", job_id)
            self._notice_cancels()
            if time.monotonic() >= next_entity:
                next_entity = time.monotonic() + self.ENTITY_REFRESH
                self._register()
            else:
                self.last_heartbeat = time.monotonic()

    def _notice_cancels(self) -> None:
        """Tell engines about cancel requests that reached us (a local check).

        The claim listener acts on them at the next transition; this makes the
        request visible (and logged) even while a long task runs.
        """
        for running in self.running_jobs:
            if running.engine is None or running.cancel_seen:
                continue
            if self.board.cancel_requested(running.job.id):
                running.cancel_seen = True
                LOG.info(
                    "job %s flow=%s conductor=%s: cancel requested",
                    running.job.id,
                    running.job.flow,
                    self.name,
                )
                running.engine.cancel(f"job {running.job.id} was cancelled")

    def _register(self) -> None:
        metadata = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "flows": self._flow_names,
            "running": len(self._running),
            "max_jobs": self.max_simultaneous_jobs,
            "engine": self.engine_kind,
            "lease": self.lease,
        }
        try:
            self.board.register_entity(self.owner, "conductor", metadata)
            self.last_heartbeat = time.monotonic()
        except BoardError as err:
            self._board_error("register", err)

    # -- shutdown -----------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while self.running_jobs and time.monotonic() < deadline and not self._abort.is_set():
            with self._slot_free:
                self._slot_free.wait(0.1)
        leftovers = self.running_jobs
        for running in leftovers:
            running.stop_reason = running.stop_reason or SHUTDOWN
            if running.engine is not None:
                running.engine.suspend()
        for running in leftovers:
            if running.future is not None:
                running.future.result()  # _run_job never raises

    # -- events -------------------------------------------------------------

    def _emit(self, event_kind: str | None, job: Job | None, /, **details: Any) -> None:
        event = event_kind or details.pop("event")
        self.stats[event] = self.stats.get(event, 0) + 1
        if job is not None:
            details.update(job_id=job.id, job_name=job.name, flow=job.flow)
            if event in _LOGGED_EVENTS:
                LOG.info(
                    "job %s flow=%s conductor=%s: %s",
                    job.id,
                    job.flow,
                    self.name,
                    event.replace("_", " "),
                    extra={
                        "job_id": job.id,
                        "flow": job.flow,
                        "conductor": self.name,
                        "event": event,
                    },
                )
        details["conductor"] = self.name
        self.notifier.notify(event, details)

    def _board_error(self, operation: str, err: BoardError) -> None:
        kind = "unavailable" if isinstance(err, BoardUnavailable) else type(err).__name__
        LOG.warning("board error during %s: %s", operation, err)
        self._emit(None, None, event=ConductorEvents.BOARD_ERROR, kind=kind, operation=operation)


_LOGGED_EVENTS = frozenset(
    {
        ConductorEvents.CLAIMED,
        ConductorEvents.RESUMED,
        ConductorEvents.CONSUMED,
        ConductorEvents.FAILED,
        ConductorEvents.CANCELLED,
        ConductorEvents.ABANDONED,
        ConductorEvents.TRASHED,
        ConductorEvents.CLAIM_LOST,
    }
)


def _outputs(engine: Any) -> Any:
    """The flow's outputs (every value a task provided) as the job's JSON result."""
    return engine.storage.fetch_outputs()


def _flow_succeeded(engine: Any) -> bool:
    from conductor import states

    return engine.storage.get_flow_state() == states.SUCCESS


def _describe_failure(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
