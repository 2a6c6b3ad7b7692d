"""The conductor's heartbeat: renew every lease in one round trip, refresh the registration.

:class:`Heartbeat` is part of :class:`~conductor.conductor.Conductor` (kept apart
so that neither grows past a readable size). Its thread wakes every ``lease *
RENEW_FRACTION`` seconds: it renews the leases of the running jobs, posts due
schedule ticks, has each running job look at the board's local view (a cancel,
a lost claim) and flushes its progress reports; every ``ENTITY_REFRESH``
seconds it re-reads the paused flows and refreshes the conductor's entity. A
heartbeat thread that dies stops the conductor.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from conductor.events import ConductorEvents
from conductor.running import RunningJob
from jobboard import BoardError, Job, JobBoard, schedules

__all__ = ["Heartbeat"]

LOG = logging.getLogger("conductor.conductor")


class Heartbeat:
    """The heartbeat half of a conductor (see the module docstring)."""

    #: Renew leases when this fraction of the lease has passed.
    RENEW_FRACTION = 1 / 3
    #: How often to refresh this conductor's registration (seconds).
    ENTITY_REFRESH = 5.0

    # What the conductor provides.
    name: str
    owner: str
    board: JobBoard
    lease: float
    max_simultaneous_jobs: int
    engine_kind: str
    fatal_error: str | None
    last_heartbeat: float | None
    _claim_lease: float | None
    _flow_names: list[str]
    _paused: frozenset[str]
    _running: dict[str, RunningJob]
    _stopping: threading.Event
    _abort: threading.Event
    _stopped: threading.Event
    _settings_seen: int | None
    _pauses_stale: bool
    _schedules_stale: bool
    _next_tick: float
    _beat_wake: threading.Event
    _beat_idle: bool

    @property
    def running_jobs(self) -> list[RunningJob]:
        raise NotImplementedError

    def _wake_claim_loop(self) -> None:
        raise NotImplementedError

    def _emit(self, event_kind: str | None, job: Job | None, /, **details: Any) -> None:
        raise NotImplementedError

    def _board_error(self, operation: str, err: BoardError) -> None:
        raise NotImplementedError

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
        of other conductors' leases (``LEASES_ON_REGISTER``), one lease at most, so
        that an idle conductor hears of a dead owner's lease by its end."""
        if not self.board.LEASES_ON_REGISTER:
            return self.ENTITY_REFRESH
        return max(0.05, min(self.ENTITY_REFRESH, self.lease))

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
                progress = running.progress  # read once: dropped when the job is done
                if progress is not None:
                    progress.flush()
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
            # Set before _running is read (a claim adds to _running before it reads this):
            # a claim made while it sleeps past a renewal always wakes it.
            self._beat_idle = self._settings_seen is not None
            pause = next_tick - time.monotonic()
            idle = self._beat_idle and not self._running
            if idle:
                due = min(next_entity - time.monotonic(), self._next_tick - time.time())
                pause = max(pause, due)
            else:
                self._beat_idle = False  # it ticks anyway: claims need not wake it
            woken = self._beat_wake.wait(max(0.0, pause))
            self._beat_idle = False
            if not woken or self._stopped.is_set():
                return next_tick
            self._beat_wake.clear()
            if idle:
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
