"""One claimed job inside a conductor: load, run under the claim listener, record one outcome.

:class:`RunningJob` holds what the conductor knows of a job it runs (claim,
engine, context, progress writer, claim listener, why it is stopping) and
runs on one of the conductor's daemon worker threads::

    load progress ──▶ engines.load(flow, context=JobContext) ──▶ engine.run()
                       under CheckingClaimListener + BoardProgress
    outcome: consume │ fail │ fail(cancelled) │ abandon (claim lost, shutdown, board error)

:meth:`RunningJob.stop` is how the conductor tells a job to stop: it marks
why, signals the task's context (``context.cancelled()`` turns true,
``on_cancel`` callbacks run) and suspends (or, for a cancel, cancels) the
engine.  Because the job runs on a daemon thread, a conductor that gave up on
a task that ignores the stop can release the job and exit without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from conductor import engines, exceptions, states
from conductor.board_progress import BoardProgress
from conductor.context import JobContext
from conductor.events import ConductorEvents
from conductor.listeners.claims import CheckingClaimListener
from conductor.logfields import bound_job, job_fields, job_logger
from conductor.registry import FlowRegistry
from conductor.types.notifier import callable_name
from jobboard import (
    BoardError,
    Claim,
    ConsumedNext,
    InvalidJob,
    InvalidState,
    Job,
    JobBoard,
    JobState,
    NotOwner,
    family,
)

__all__ = ["CANCELLED", "CLAIM_LOST", "SHUTDOWN", "RunningJob"]

LOG = logging.getLogger(__name__)

#: Why a job stops: its conductor is stopping (the attempt is refunded).
SHUTDOWN = "conductor stopping"
#: Why a job stops: its claim is gone (or uncertain for too long).
CLAIM_LOST = "claim lost"
#: Why a job stops: it was cancelled.
CANCELLED = "cancelled"

_CONTEXT_REASON = {SHUTDOWN: "shutdown", CLAIM_LOST: "claim lost", CANCELLED: "cancelled"}


class Host(Protocol):
    """What a running job needs of its conductor."""

    name: str
    board: JobBoard
    flows: FlowRegistry
    engine_kind: str
    engine_options: dict[str, Any]
    listener_factories: tuple[Callable[[Any], Any], ...]
    on_job_loss: Callable[[Any, str, dict[str, Any]], None] | None
    _claim_lease: float | None

    def _emit(self, event_kind: str | None, job: Job | None, /, **details: Any) -> None: ...

    def _board_error(self, operation: str, err: BoardError) -> None: ...

    def _next_flows(self) -> list[str] | None:
        """The flows to claim the next job of in the consume's own call, or None
        when the worker will not claim next (stopping, every flow paused)."""
        ...


class RunningJob:
    """A job this conductor is running (see the module docstring)."""

    def __init__(self, host: Host, claim: Claim, job: Job) -> None:
        self.host = host
        self.claim = claim
        self.job = job
        # The engine and its helpers, from loading until the outcome is recorded (then
        # dropped: they and this job refer to each other). Other threads read each once.
        self.engine: Any = None
        self.context: JobContext | None = None
        self.progress: BoardProgress | None = None
        self.listener: CheckingClaimListener | None = None
        #: Why the conductor stopped it: CLAIM_LOST, SHUTDOWN (None while it may run).
        self.stop_reason: str | None = None
        self.cancel_seen = False
        #: True once the conductor released the job without waiting for its task.
        self.abandoned = False
        #: True while ``engine.run()`` runs: only then is there a task to stop.
        self.in_engine = False
        self.started = time.monotonic()
        #: Set once the worker is done with the job (its outcome recorded or given up).
        self.done = threading.Event()
        #: The job's log fields, and a logger whose records carry them from any thread.
        self.fields = job_fields(job, host.name)
        self.log = job_logger(LOG, self.fields)
        #: True once the loss of the claim was reported (it is reported once per job).
        self.loss_reported = False
        #: How an operator ended the job while we held it ("cancelled: why"), or None.
        self.ended_by_operator: str | None = None
        #: The consume's claim of the worker's next job (``consume_and_claim_next``),
        #: or None when the consume did not claim (the worker then claims itself).
        self.next: ConsumedNext | None = None

    # -- telling it to stop ----------------------------------------------------

    def stop(self, why: str) -> None:
        """Stop the job for ``why`` (CANCELLED, CLAIM_LOST or SHUTDOWN); repeated calls are no-ops."""
        if why == CANCELLED:
            if self.cancel_seen:
                return
            self.cancel_seen = True
            self.log.info("job %s: cancel requested", self.job.id)
        elif self.stop_reason is None or why == CLAIM_LOST:
            self.stop_reason = why
        context = self.context
        if context is not None:
            context.signal_cancel(_CONTEXT_REASON[why])
        engine = self.engine
        if engine is not None:
            if why == CANCELLED:
                engine.cancel(f"job {self.job.id} was cancelled")
            else:
                engine.suspend()

    def stop_probe(self) -> str | None:
        """Why the job must stop, from the board's local view only (the task context asks it)."""
        board = self.host.board
        if board.cancel_requested(self.job.id):
            return "cancelled"
        listener = self.listener
        if listener is not None and listener.claim_gone() is not None:
            return "claim lost"
        return None

    def notice(self) -> None:
        """Act on what the board's local view says now: a cancel, or a claim gone.

        Only while the engine runs: once it returned, the outcome's fenced
        write settles it (and our own consume must not look like a loss).
        """
        if not self.in_engine:
            return
        if not self.cancel_seen and self.host.board.cancel_requested(self.job.id):
            self.stop(CANCELLED)
        listener = self.listener
        if listener is not None and self.stop_reason != CLAIM_LOST:
            gone = listener.claim_gone()
            if gone is not None:
                self.claim_lost(f"claim {gone}")

    def on_job_loss(self, engine: Any, state: str, details: dict[str, Any]) -> None:
        """The claim listener's default reaction: report once and stop; released afterwards."""
        self.claim_lost(f"claim lost (noticed at {state})")

    def claim_lost(self, reason: str, *, ended: str | None = None) -> None:
        """The claim is gone: report it once per job and stop the job.

        It is reported as an operator's ending (WARNING "job ended by
        operator", never an error) when ``ended`` says so or the board shows the
        job finished by someone else.
        """
        if not self.loss_reported:
            self.loss_reported = True
            ending = ended or self._ended_elsewhere()
            if ending is not None:
                self.ended_by_operator = ending
                self.log.warning("job %s: job ended by operator (%s)", self.job.id, ending)
                self.host._emit(ConductorEvents.ENDED_BY_OPERATOR, self.job, reason=ending)
            else:
                self.host._emit(ConductorEvents.CLAIM_LOST, self.job, reason=reason)
        self.stop(CLAIM_LOST)

    def _ended_elsewhere(self) -> str | None:
        """``"<state>: <reason>"`` when an operator ended the job under our claim (one read):
        it is trashed or cancelled and nobody claimed it after us; else None."""
        try:
            job = self.host.board.get(self.job.id)
        except BoardError:
            return None
        if job.state not in (JobState.TRASHED, JobState.CANCELLED) or job.token != self.claim.token:
            return None
        return f"{job.state.value}: {job.last_error}" if job.last_error else job.state.value

    # -- running ---------------------------------------------------------------

    def execute(self) -> None:
        """Load and run the job, then record exactly one outcome on the board; every record
        logged meanwhile on this thread carries the job's fields."""
        with bound_job(self.fields):
            self._execute()
        self._let_go()

    def _let_go(self) -> None:
        """The outcome is recorded: drop the engine, context, progress writer and claim
        listener. They and this job refer to each other, so holding them would leave
        every finished job to the cycle collector (about 80 objects per job, and as much
        CPU per job in collections as the conductor's own bookkeeping)."""
        self.engine = self.context = self.progress = self.listener = None

    def _execute(self) -> None:
        claim, job, host = self.claim, self.job, self.host
        board = host.board
        try:
            # Token 1 is the job's first claim ever: no progress can exist yet.
            records = board.load_progress(job.id) if claim.token > 1 else {}
        except BoardError as err:
            host._board_error("load_progress", err)
            self.release(f"could not load progress: {err}")
            return
        done = sorted(n for n, r in records.items() if r.get("state") == states.SUCCESS)
        if done:
            host._emit(ConductorEvents.RESUMED, job, tasks_done=done)
        try:
            engine = self._load(records)
        except Exception as err:  # noqa: BLE001 - bad job input or broken flow factory
            self.log.warning("job %s: cannot load flow %s: %s", job.id, job.flow, err)
            self._finish_failed(f"cannot load flow {job.flow!r}: {err}")
            return
        if not self._run(engine):
            return
        if engine.storage.get_flow_state() != states.SUCCESS:
            if self.stop_reason == CLAIM_LOST:
                self._claim_lost("claim lost while running")
            else:
                self.release(self.stop_reason or "engine suspended")
            return
        self._finish_consumed(engine)

    def _load(self, records: Mapping[str, dict[str, Any]]) -> Any:
        claim, job, host = self.claim, self.job, self.host
        progress = BoardProgress(
            host.board, claim, records, host.name, self._task_saved, log_fields=self.fields
        )
        context = JobContext(
            {
                "job_id": job.id,
                "job_name": job.name,
                "flow": job.flow,
                "fencing_token": claim.token,
                "owner": claim.owner,
                "conductor": host.name,
            },
            sink=progress.report,
            probe=self.stop_probe,
            board=host.board,
        )
        engine = engines.load(
            host.flows.build(job.flow, job),
            store=job.store,
            engine=host.engine_kind,
            progress=progress,
            context=context,
            **host.engine_options,
        )
        progress.position = engine.storage.position
        engine.atom_notifier.register(engine.atom_notifier.ANY, progress.task_moved)
        self.progress, self.context, self.engine = progress, context, engine
        self.listener = CheckingClaimListener(
            engine,
            job,
            host.board,
            claim.owner,
            on_job_loss=host.on_job_loss or self.on_job_loss,
            report=False,
        )
        if self.cancel_seen:  # told to stop while loading
            engine.cancel(f"job {job.id} was cancelled")
        elif self.stop_reason is not None:
            context.signal_cancel(_CONTEXT_REASON[self.stop_reason])
            engine.suspend()
        return engine

    def _run(self, engine: Any) -> bool:
        """Run the engine; false when the outcome was already recorded."""
        assert self.listener is not None
        attached = [factory(engine) for factory in self.host.listener_factories]
        try:
            for extra in attached:
                extra.__enter__()
            with self.listener:
                self.in_engine = True
                try:
                    engine.run()
                finally:
                    self.in_engine = False
        except exceptions.Cancelled as err:
            self._finish_failed(str(err), cancelled=True)
        except (NotOwner, InvalidState) as err:  # a fenced write was rejected: the claim is gone
            self._claim_lost(f"fenced write rejected: {err}")
        except InvalidJob as err:  # a task's record is not storable: retrying cannot help
            self._finish_failed(f"progress rejected: {err}")
        except BoardError as err:
            self.host._board_error("save_progress", err)
            self.release(f"board error while running: {err}")
        except Exception as err:  # noqa: BLE001 - task failure (engine already reverted)
            self._finish_failed(f"{type(err).__name__}: {err}")
        else:
            return True
        finally:
            for extra in reversed(attached):
                try:
                    extra.__exit__(None, None, None)
                except Exception:  # noqa: BLE001
                    self.log.exception("listener %s failed to detach", callable_name(extra))
        return False

    def _task_saved(self, atom_name: str, record: Mapping[str, Any]) -> None:
        self.host._emit(ConductorEvents.TASK_DONE, self.job, task=atom_name, record=record)

    # -- outcomes --------------------------------------------------------------

    def _finish_consumed(self, engine: Any) -> None:
        """Consume the job; the last task's record (kept by the progress writer)
        goes in the same fenced write."""
        claim, job, host = self.claim, self.job, self.host
        held = self.progress.take_held() if self.progress is not None else {}
        try:
            result = engine.storage.fetch_outputs()
            flows = host._next_flows()
            if flows is None:
                host.board.consume(
                    job.id, claim.owner, claim.token, result=result, progress=held or None
                )
            else:  # the worker claims its next job at once: in the consume's own call
                self.next = host.board.consume_and_claim_next(
                    job.id,
                    claim.owner,
                    claim.token,
                    result=result,
                    progress=held or None,
                    flows=flows,
                    lease=host._claim_lease,
                )
        except InvalidJob as err:  # e.g. the result is too large or not JSON
            self._save_held(held)
            self._finish_failed(f"result rejected: {err}")
            return
        except (NotOwner, InvalidState) as err:
            self._claim_lost(f"consume rejected: {err}")
            return
        except BoardError as err:
            host._board_error("consume", err)
            self._save_held(held)
            self.release(f"consume failed: {err}")
            return
        if self.progress is not None:
            self.progress.saved_with_outcome(held)
        host._emit(ConductorEvents.CONSUMED, job, token=claim.token)

    def _save_held(self, held: dict[str, dict[str, Any]]) -> None:
        """Store kept records on their own (the consume that was to carry them failed)."""
        if self.progress is not None and held:
            self.progress.save_held(held)

    def _finish_failed(self, error: str, *, cancelled: bool = False) -> None:
        claim, job, host = self.claim, self.job, self.host
        if self.progress is not None:
            self.progress.save_held()
        try:
            host.board.fail(job.id, claim.owner, claim.token, error=error, cancelled=cancelled)
        except (NotOwner, InvalidState) as err:
            self._claim_lost(f"fail rejected: {err}")
            return
        except BoardError as err:
            host._board_error("fail", err)
            self.release(f"could not record failure: {err}")
            return
        event = ConductorEvents.CANCELLED if cancelled else ConductorEvents.FAILED
        host._emit(event, job, error=error)
        if cancelled:
            try:  # a cancelled parent takes its unfinished children with it
                family.cancel_children(host.board, job.id)
            except BoardError as err:
                host._board_error("cancel children", err)

    def _claim_lost(self, reason: str) -> None:
        self.claim_lost(reason)
        self.release(reason, quiet=True)

    def release(self, reason: str, *, quiet: bool = False) -> None:
        """Abandon the job so another conductor can take it now (not after the lease).

        A release because the conductor stops is not the job's fault: the
        attempt is refunded so restarts never make a job look like poison.
        """
        claim, job, host = self.claim, self.job, self.host
        if self.abandoned or self.ended_by_operator is not None:
            return  # released already, or finished by an operator: nothing to give back
        refund = self.stop_reason == SHUTDOWN
        progress = self.progress  # read once: the drain's thread may release a stuck job
        if progress is not None:
            progress.save_held()  # the next owner skips the tasks that succeeded
        try:
            host.board.abandon(job.id, claim.owner, claim.token, reason=reason[:500], refund=refund)
        except (NotOwner, InvalidState) as err:
            if not quiet:
                self.log.info("job %s: not released (%s): %s", job.id, reason, err)
            return
        except BoardError as err:
            # The lease will run out by itself: the job is not lost.
            host._board_error("abandon", err)
            self.log.error("job %s: abandon failed (%s); its lease will expire", job.id, err)
            return
        host._emit(ConductorEvents.ABANDONED, job, reason=reason)

    def abandon_now(self, reason: str) -> None:
        """Release the job without waiting for its task (which may still be running)."""
        self.stop_reason = self.stop_reason or SHUTDOWN
        self.release(reason)
        self.abandoned = True
