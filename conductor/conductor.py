"""The conductor daemon: claim jobs, run them under the claim listener, finish them.

One :class:`Conductor` serves the flows of its registry from one board::

    claim_next ──▶ RunningJob on a daemon worker thread (conductor.running):
        │             load progress ─▶ engine.run() under CheckingClaimListener
        │                                 │ every finished task ─▶ save_progress(token)
        │                                 ▼
        └── heartbeat renews every lease ── consume / fail / abandon / trash

Outcomes: success consumes the job with the flow's outputs; a task failure
(after the engine reverted) fails it; a cancel request stops the engine at the
next transition (and tells the running task through its context), reverts,
and ends the job cancelled; a lost claim or a stopping conductor suspends the
engine and abandons the job so another conductor resumes it at once; the
board trashes a job claimed more than its ``max_attempts`` times (a poison
job).

Stopping: ``stop()`` stops claiming and lets running jobs finish for
``drain_timeout`` seconds; then their tasks are told to stop
(``context.cancelled()``) and the engines suspend; a task that has not
returned ``stop_timeout`` seconds later is left behind: its job is abandoned
(refunded) and :meth:`Conductor.run` returns without it.  A second ``stop()``
skips both waits.  A heartbeat thread that dies stops the conductor the same
way, marks it unhealthy and sets :attr:`Conductor.fatal_error`.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from conductor.events import LOGGED_EVENTS, ConductorEvents
from conductor.registry import FlowRegistry, RegistryError
from conductor.running import CANCELLED, SHUTDOWN, RunningJob
from conductor.types.notifier import Notifier
from jobboard import (
    BoardError,
    BoardEvent,
    BoardUnavailable,
    Job,
    JobBoard,
    schedules,
    unique_owner,
)

__all__ = ["SHUTDOWN", "Conductor", "ConductorEvents", "RunningJob"]

LOG = logging.getLogger(__name__)

#: Board events after which a held claim may be gone.
_CLAIM_EVENTS = frozenset(
    {"claimed", "abandoned", "trashed", "consumed", "failed", "cancelled", "expired"}
)


#: Events logged above INFO (the others are INFO).
_EVENT_LEVELS = {
    ConductorEvents.FAILED: logging.WARNING,
    ConductorEvents.CLAIM_LOST: logging.WARNING,
}


class Conductor:
    """Claims jobs of the registered flows from a board and runs them.

    ``flows`` is a :class:`FlowRegistry` or a mapping of name -> factory.
    ``lease`` overrides the board's lease length for this conductor's claims;
    leases are renewed every ``lease * RENEW_FRACTION`` seconds, all in one
    round trip. ``drain_timeout`` bounds a graceful stop and ``stop_timeout``
    how long a told-to-stop task is waited for before its job is abandoned.
    """

    #: Renew leases when this fraction of the lease has passed.
    RENEW_FRACTION = 1 / 3
    #: How often to refresh this conductor's registration (seconds).
    ENTITY_REFRESH = 5.0
    #: Longest single block in ``board.wait`` so stop requests are seen promptly.
    IDLE_WAIT = 1.0
    #: The same on a board whose wait ``stop()`` interrupts (``WAIT_INTERRUPTIBLE``):
    #: an idle conductor then sends next to nothing.
    LONG_IDLE_WAIT = 30.0

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
        stop_timeout: float = 10.0,
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
        self.stop_timeout = stop_timeout
        self.on_job_loss = on_job_loss
        self.listener_factories = listeners
        self.notifier = Notifier()
        #: Why the conductor stopped on its own (a dead heartbeat), or None.
        self.fatal_error: str | None = None
        #: Jobs released while their task still ran (threads left behind by ``run``).
        self.left_behind: list[RunningJob] = []
        self._flow_names = sorted(self.flows.names())
        self._running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()
        self._slot_free = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[RunningJob | None] = queue.SimpleQueue()
        self._paused: frozenset[str] = frozenset()
        # The board's settings count (pauses, schedules) as last read, whether each must
        # be read again, and when the next schedule tick falls due (wall clock).
        self._settings_seen: int | None = None
        self._pauses_stale = self._schedules_stale = True
        self._next_tick = 0.0
        # An idle heartbeat sleeps until its next refresh; a claim wakes it for renewals.
        self._beat_wake = threading.Event()
        self._beat_idle = False
        self.last_heartbeat: float | None = None
        self.stats: dict[str, int] = {k: 0 for k in ConductorEvents.ALL}

    # -- public life cycle --------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until :meth:`stop`; returns after the shutdown described above."""
        self._stopped.clear()
        # Daemon workers: a task that ignores every stop cannot keep the process alive.
        for n in range(self.max_simultaneous_jobs):
            threading.Thread(target=self._worker, name=f"{self.name}-job-{n}", daemon=True).start()
        # Registration first: the pauses and schedules read after it are at least as new
        # as the settings count it saw, so the heartbeat need not read them again.
        self._register()
        self._note_settings()
        self._refresh_paused()
        if self._paused & set(self._flow_names):
            self._register()  # the registration lists the paused flows
        self._promote_schedules()
        self.board.add_listener(self._on_board_event, held_only=True)
        self._heartbeat = threading.Thread(
            target=self._heartbeat_main, name=f"{self.name}-heartbeat", daemon=True
        )
        self._heartbeat.start()
        LOG.info("conductor %s (%s) serving flows %s", self.name, self.owner, self._flow_names)
        try:
            self._claim_loop()
        finally:
            self.board.stop_waiting()  # an idle conductor queued on the board: the next one wakes
            self._drain()
            for _ in range(self.max_simultaneous_jobs):
                self._jobs.put(None)  # idle workers end; a left-behind one is a daemon
            self.board.remove_listener(self._on_board_event)
            try:
                self.board.unregister_entity(self.owner)
            except BoardError as err:
                LOG.warning("could not unregister %s: %s", self.owner, err)
            self._stopped.set()
            self._beat_wake.set()
            LOG.info("conductor %s stopped", self.name)

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; let running jobs finish within ``timeout`` (default the
        drain timeout), then stop their tasks and abandon the rest. Calling it
        again (a second signal) abandons at once."""
        if self._stopping.is_set():
            self._abort.set()
        elif timeout is not None:
            self.drain_timeout = timeout
        self._stopping.set()
        self._wake_claim_loop()

    def _wake_claim_loop(self) -> None:
        """Wake the claim loop wherever it blocks: waiting for a slot or for work."""
        with self._slot_free:
            self._slot_free.notify_all()
        try:
            self.board.interrupt_wait()
        except BoardError as err:  # the wait ends by its timeout anyway
            LOG.info("could not interrupt the board's wait: %s", err)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or the conductor stops on its own)."""
        return self._stopping.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`run` has returned; True if it has."""
        return self._stopped.wait(timeout)

    @property
    def running_jobs(self) -> list[RunningJob]:
        """A snapshot of the jobs being run."""
        with self._lock:
            return list(self._running.values())

    def healthy(self) -> tuple[bool, str]:
        """(ok, reason): the heartbeat thread is alive, the board connected (or why a
        halted board refuses to work), heartbeats fresh; a board's warnings about its
        server (unsafe persistence or eviction) ride along."""
        if self.fatal_error is not None:
            return False, self.fatal_error
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

    def _refresh_paused(self) -> None:
        """Read the board's paused flows (the heartbeat does it at a registration refresh
        that saw the board's settings change, so a pause costs no round trip of its own on
        the claim path)."""
        try:
            paused = frozenset(self.board.paused_flows())
        except BoardError as err:  # keep the last known set; claims report the outage
            LOG.debug("could not read paused flows: %s", err)
            return
        self._pauses_stale = False
        for flow in sorted((paused ^ self._paused) & set(self._flow_names)):
            LOG.info("flow %s %s", flow, "paused: not claiming it" if flow in paused else "resumed")
        self._paused = paused

    def _note_settings(self) -> None:
        """After a registration refresh: pauses and schedules must be read again when the
        board's settings count moved (always, on a board that keeps none)."""
        version = self.board.settings_version()
        if version is None or version != self._settings_seen:
            self._settings_seen = version
            self._pauses_stale = self._schedules_stale = True

    def _beat_period(self) -> float:
        """Seconds between registration refreshes. On a board whose refresh also tells
        of other conductors' leases (``settings_version`` kept), one lease at most, so
        that an idle conductor hears of a dead owner's lease by its end."""
        if self.board.settings_version() is None:
            return self.ENTITY_REFRESH
        return max(0.05, min(self.ENTITY_REFRESH, self.lease))

    def _claimable_flows(self) -> list[str]:
        """The served flows that are not paused (as last read; no round trip)."""
        return [f for f in self._flow_names if f not in self._paused]

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            with self._slot_free:
                while (
                    len(self._running) >= self.max_simultaneous_jobs and not self._stopping.is_set()
                ):
                    self._slot_free.wait(self.IDLE_WAIT)
            if self._stopping.is_set():
                break
            flows = self._claimable_flows()
            if not flows:  # every flow paused
                self._stopping.wait(self.IDLE_WAIT)
                continue
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
            running = RunningJob(self, claim, job)
            with self._lock:
                self._running[claim.job_id] = running
            self._emit(ConductorEvents.CLAIMED, job, token=claim.token)
            self._jobs.put(running)  # a worker is free: the loop claims only into a free slot
            if self._beat_idle:
                self._beat_wake.set()  # the heartbeat slept past a renewal: start renewing

    def _wait_for_work(self, flows: list[str]) -> None:
        """Block until the board says a job may be waiting (or we stop).

        ``wait`` returning False means nothing became claimable: claiming
        again would only cost a round trip, so an idle conductor just waits
        again (waking every ``IDLE_WAIT`` to notice a stop request).
        """
        idle = self.LONG_IDLE_WAIT if self.board.WAIT_INTERRUPTIBLE else self.IDLE_WAIT
        while not self._stopping.is_set():
            try:
                if self.board.wait(timeout=idle, flows=flows):
                    return
            except BoardError as err:
                self._board_error("wait", err)
                self._stopping.wait(min(1.0, self.lease / 4))
                return
            if self._claimable_flows() != flows:
                return  # a flow was paused or resumed meanwhile

    # -- one job ------------------------------------------------------------

    def _worker(self) -> None:
        while (running := self._jobs.get()) is not None:
            self._run_job(running)

    def _run_job(self, running: RunningJob) -> None:
        try:
            running.execute()
        except Exception:  # noqa: BLE001 - one job must never stop the conductor
            running.log.exception("job %s: unexpected error in conductor", running.job.id)
            running.release("conductor error")
        finally:
            with self._slot_free:
                if self._running.get(running.claim.job_id) is running:
                    del self._running[running.claim.job_id]
                self._slot_free.notify_all()
            running.done.set()

    # -- what the board tells us ---------------------------------------------

    def _on_board_event(self, event: BoardEvent) -> None:
        """Board events (on the board's thread): act on a cancel or a lost claim at once."""
        if event.job_id is None:
            return
        with self._lock:
            running = self._running.get(event.job_id)
        if running is None:
            return
        if event.kind == "cancel_requested":
            running.stop(CANCELLED)
        elif (
            event.kind in ("trashed", "cancelled")
            and event.data.get("forced")
            and event.data.get("token") in (None, running.claim.token)
        ):
            # An operator ended the job: say so (no round trip on the event thread).
            who = event.data.get("owner") or "an operator"
            running.claim_lost(f"{event.kind} by {who}", ended=f"{event.kind} by {who}")
        elif event.kind in _CLAIM_EVENTS:
            running.notice()

    # -- heartbeat ----------------------------------------------------------

    def _heartbeat_main(self) -> None:
        """The heartbeat thread; if it ever dies the conductor must not run on without renewals."""
        try:
            self._heartbeat_loop()
        except BaseException as err:  # noqa: BLE001 - reported, then the conductor stops
            LOG.critical("heartbeat thread died; stopping the conductor", exc_info=True)
            self.fatal_error = f"heartbeat thread died: {type(err).__name__}: {err}"
            self._stopping.set()
            self._abort.set()
            self._wake_claim_loop()

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.lease * self.RENEW_FRACTION)
        beat = self._beat_period()
        next_tick = time.monotonic() + interval
        next_entity = time.monotonic() + beat
        while True:
            next_tick = self._heartbeat_sleep(next_tick, next_entity, interval)
            if self._stopped.is_set():
                return
            self._renew()
            self._promote_schedules()
            for running in self.running_jobs:
                running.notice()
                if running.progress is not None:
                    running.progress.flush()
            if time.monotonic() >= next_entity:
                next_entity = time.monotonic() + beat
                self._register()
                self._note_settings()
                if self._pauses_stale:
                    self._refresh_paused()
            else:
                self.last_heartbeat = time.monotonic()
            next_tick = time.monotonic() + interval

    def _heartbeat_sleep(self, next_tick: float, next_entity: float, interval: float) -> float:
        """Sleep until the next tick of the heartbeat; returns when the one after falls.

        With no job running and a board that keeps a settings count, there is
        nothing to renew: sleep until the next refresh or schedule tick instead,
        unless a claim wakes it (the first renewal is then one interval away).
        """
        while True:
            self._beat_idle = self._settings_seen is not None
            pause = next_tick - time.monotonic()
            if self._beat_idle and not self._running:
                due = min(next_entity - time.monotonic(), self._next_tick - time.time())
                pause = max(pause, due)
            woken = self._beat_wake.wait(max(0.0, pause))
            self._beat_idle = False
            if not woken or self._stopped.is_set():
                return next_tick
            self._beat_wake.clear()
            next_tick = time.monotonic() + interval

    def _renew(self) -> None:
        claims = [r.claim for r in self.running_jobs if not (r.abandoned or r.loss_reported)]
        if not claims:
            return
        started = time.monotonic()
        try:
            renewed = self.board.renew(claims, lease=self._claim_lease)
        except BoardError as err:
            self._board_error("renew", err)
            return
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
                held.claim_lost("lease renewal refused")

    def _promote_schedules(self) -> None:
        """Post the due ticks of the board's schedules for the flows served here.

        Runs on the heartbeat; every conductor may race on a tick, the tick's
        dedupe key and the compare-and-set on ``next_at`` make it one job. On a
        board that keeps a settings count, the schedules are read only when it
        moved or when the next tick falls due.
        """
        now = time.time()
        if self._settings_seen is not None and not self._schedules_stale and now < self._next_tick:
            return  # nothing changed and no tick is due: no round trip
        try:
            found = schedules.list_schedules(self.board)
            for job in schedules.promote_due(self.board, self._flow_names, now, found):
                LOG.debug("schedule tick posted as job %s", job.id)
            self._schedules_stale = False
            self._next_tick = schedules.next_due(found, self._flow_names, now)
        except BoardError as err:
            self._board_error("promote schedules", err)
        except Exception:  # noqa: BLE001 - a bad schedule must never stop the heartbeat
            LOG.exception("promoting schedules failed; retried on the next heartbeat")

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
            # The longest gap between two registrations: `jobboard conductors` flags a
            # conductor stale after two of them.
            "heartbeat_interval": self.ENTITY_REFRESH + self.lease * self.RENEW_FRACTION,
            "paused": sorted(self._paused & set(self._flow_names)),
        }
        try:
            self.board.register_entity(self.owner, "conductor", metadata)
            self.last_heartbeat = time.monotonic()
        except BoardError as err:
            self._board_error("register", err)

    # -- shutdown -----------------------------------------------------------

    def _drain(self) -> None:
        """Let running jobs finish; then stop their tasks; then leave the stuck ones behind."""
        self._wait_for_jobs(self.drain_timeout)
        leftovers = self.running_jobs
        for running in leftovers:
            running.stop(SHUTDOWN)
        self._wait_for_jobs(self.stop_timeout)
        for running in self.running_jobs:
            running.log.warning(
                "job %s: task still running %.1fs after the stop; releasing the job without it",
                running.job.id,
                self.stop_timeout,
            )
            running.abandon_now("conductor stopping: the task did not stop in time")
            self.left_behind.append(running)

    def _wait_for_jobs(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running_jobs and time.monotonic() < deadline and not self._abort.is_set():
            with self._slot_free:
                self._slot_free.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    # -- events -------------------------------------------------------------

    def _emit(self, event_kind: str | None, job: Job | None, /, **details: Any) -> None:
        event = event_kind or details.pop("event")
        self.stats[event] = self.stats.get(event, 0) + 1
        if job is not None:
            details.update(job_id=job.id, job_name=job.name, flow=job.flow)
            if event in LOGGED_EVENTS:
                why = details.get("error") or details.get("reason")
                LOG.log(
                    _EVENT_LEVELS.get(event, logging.INFO),
                    "job %s flow=%s conductor=%s: %s%s",
                    job.id,
                    job.flow,
                    self.name,
                    event.replace("_", " "),
                    f": {why}" if why else "",
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
