"""The conductor daemon: claim jobs, run them under the claim listener, finish them.

One :class:`Conductor` serves the flows of its registry from one board::

    claim_next ──▶ RunningJob on a daemon worker thread (conductor.running):
        │             load progress ─▶ engine.run() under CheckingClaimListener
        │                                 │ every finished task ─▶ save_progress(token)
        │                                 ▼
        └── heartbeat renews every lease ── consume / fail / abandon / trash
                                              │
                          the worker claims its next job itself ◀─┘

A worker that finished a job claims the next one on its own thread while
there is work, so a busy conductor hands no job between threads; the claim
loop only fills free slots and waits on the board once a claim found nothing.

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
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from conductor.events import LOGGED_EVENTS, ConductorEvents
from conductor.heartbeat import Heartbeat
from conductor.registry import FlowRegistry, RegistryError
from conductor.running import CANCELLED, SHUTDOWN, RunningJob
from conductor.types.notifier import Notifier
from jobboard import (
    BoardError,
    BoardEvent,
    BoardUnavailable,
    Claim,
    ConsumedNext,
    Job,
    JobBoard,
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


class Conductor(Heartbeat):
    """Claims jobs of the registered flows from a board and runs them.

    ``flows`` is a :class:`FlowRegistry` or a mapping of name -> factory.
    ``lease`` overrides the board's lease length for this conductor's claims;
    leases are renewed every ``lease * RENEW_FRACTION`` seconds, all in one
    round trip. ``drain_timeout`` bounds a graceful stop and ``stop_timeout``
    how long a told-to-stop task is waited for before its job is abandoned.
    """

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
        #: Slots whose worker is claiming its next job (counted as busy).
        self._claiming = 0
        #: Set (under the lock) when a worker's own claim found nothing to claim.
        self._nothing_left = False
        #: Set once the drain timeout has passed: a job claimed later stops at once.
        self._stop_tasks = threading.Event()
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
        self._stop_tasks.clear()
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

    def _claimable_flows(self) -> list[str]:
        """The served flows that are not paused (as last read; no round trip)."""
        return [f for f in self._flow_names if f not in self._paused]

    def _busy(self) -> int:
        """Slots in use: jobs running and workers claiming their next job (lock held)."""
        return len(self._running) + self._claiming

    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            with self._slot_free:
                self._nothing_left = False
                while self._busy() >= self.max_simultaneous_jobs and not self._stopping.is_set():
                    self._slot_free.wait(self.IDLE_WAIT)
                # A worker's own claim found nothing while we waited: wait for work at once.
                nothing_left = self._nothing_left
            if self._stopping.is_set():
                break
            flows = self._claimable_flows()
            if not flows:  # every flow paused
                self._stopping.wait(self.IDLE_WAIT)
                continue
            if nothing_left:
                self._wait_for_work(flows)
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
            # A worker is free: the loop claims only into a free slot.
            self._jobs.put(self._start_job(claim))

    def _start_job(self, claim: Claim) -> RunningJob:
        """Count a new claim as running (before anything can look for it) and announce it."""
        job = claim.job if claim.job is not None else self.board.get(claim.job_id)
        running = RunningJob(self, claim, job)
        with self._lock:
            self._running[claim.job_id] = running
        self._emit(ConductorEvents.CLAIMED, job, token=claim.token)
        if self._beat_idle:
            self._beat_wake.set()  # the heartbeat slept past a renewal: start renewing
        return running

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
            while running is not None:
                self._run_job(running)
                running = self._claim_here(running.next)

    def _next_flows(self) -> list[str] | None:
        """The flows a worker's consume claims its next job of, in the same call
        (``consume_and_claim_next``): those :meth:`_claim_here` would claim next
        with; None when it would not claim (stopping, every flow paused)."""
        if self._stopping.is_set():
            return None
        return self._claimable_flows() or None

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
                # The slot stays busy: this worker claims its next job (_claim_here).
                self._claiming += 1
            running.done.set()

    def _claim_here(self, claimed: ConsumedNext | None = None) -> RunningJob | None:
        """Claim the next job on this worker's thread, its slot still counted busy.

        Saves handing each job from the claim loop's thread to a worker's.
        ``claimed``: what the last job's consume claimed in its own call
        (``consume_and_claim_next``), taken as this claim. None (the slot
        freed, the claim loop told) when stopping, when every flow is paused,
        on a board error (the claim loop retries and backs off) or when nothing
        was claimable (the claim loop then waits for work).
        """
        running = None
        found_nothing = False
        try:
            claim = None
            if claimed is not None:  # as if claim_next had answered
                if claimed.claim_error is not None:
                    raise claimed.claim_error
                claim = claimed.claim
                found_nothing = claim is None
            elif (flows := self._claimable_flows()) and not self._stopping.is_set():
                claim = self.board.claim_next(self.owner, flows, lease=self._claim_lease)
                found_nothing = claim is None
            if claim is not None:
                running = self._start_job(claim)
                if self._stop_tasks.is_set():  # claimed while the drain was ending
                    running.stop(SHUTDOWN)
        except BoardError as err:
            self._board_error("claim", err)
        except Exception:  # noqa: BLE001 - the worker must go on serving its slot
            LOG.exception("claiming the next job on a worker failed")
        finally:
            with self._slot_free:
                self._claiming -= 1
                if running is None:
                    self._nothing_left = found_nothing
                    self._slot_free.notify_all()
        return running

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

    # -- shutdown -----------------------------------------------------------

    def _drain(self) -> None:
        """Let running jobs finish; then stop their tasks; then leave the stuck ones behind."""
        self._wait_for_jobs(self.drain_timeout)
        self._stop_tasks.set()
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
        while time.monotonic() < deadline and not self._abort.is_set():
            with self._slot_free:
                if not self._busy():
                    return
                self._slot_free.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    # -- events -------------------------------------------------------------

    def _emit(self, event_kind: str | None, job: Job | None, /, **details: Any) -> None:
        """Count an event, log it (its record built only when its level is on) and tell
        the notifier's listeners (its details completed only when there are some)."""
        event = event_kind or details.pop("event")
        self.stats[event] = self.stats.get(event, 0) + 1
        if job is not None and event in LOGGED_EVENTS:
            level = _EVENT_LEVELS.get(event, logging.INFO)
            if LOG.isEnabledFor(level):
                why = details.get("error") or details.get("reason")
                LOG.log(
                    level,
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
        if not self.notifier.has_listeners():
            return
        if job is not None:
            details.update(job_id=job.id, job_name=job.name, flow=job.flow)
        details["conductor"] = self.name
        self.notifier.notify(event, details)

    def _board_error(self, operation: str, err: BoardError) -> None:
        kind = "unavailable" if isinstance(err, BoardUnavailable) else type(err).__name__
        LOG.warning("board error during %s: %s", operation, err)
        self._emit(None, None, event=ConductorEvents.BOARD_ERROR, kind=kind, operation=operation)
