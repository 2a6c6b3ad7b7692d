"""What this process knows about its own claims, and the board's listeners.

Every board keeps a local view of the claims it made: the lease deadline on
the local monotonic clock, claims known lost, cancel requests that reached
it. Backends feed it with the events they learn (pushed or polled) through
:meth:`LocalClaims._emit`, so that :meth:`LocalClaims.claim_status` costs no
round trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from jobboard.model import BoardEvent, Claim, ClaimStatus, JobRef, job_id_of

__all__ = ["LocalClaims"]

log = logging.getLogger("jobboard.base")

_CLAIM_ENDING_EVENTS = frozenset(
    {"claimed", "abandoned", "trashed", "consumed", "failed", "cancelled", "expired"}
)


class LocalClaims:
    """The local view of this process's claims, and the listeners of board events."""

    def __init__(self, local_clock: Callable[[], float]) -> None:
        self._local_clock = local_clock
        self._local_lock = threading.Lock()
        self._held: dict[str, Claim] = {}
        self._lost: set[str] = set()
        self._cancel_flags: set[str] = set()
        self._listeners: list[Callable[[BoardEvent], None]] = []
        #: Listeners that only want events about jobs this board holds a claim on.
        self._held_only: set[Callable[[BoardEvent], None]] = set()

    def add_listener(
        self, callback: Callable[[BoardEvent], None], *, held_only: bool = False
    ) -> None:
        """Call ``callback(event)`` for board changes (from a backend thread).

        With ``held_only`` the callback gets only events about jobs this board
        holds a claim on (a conductor's case), and a backend may skip the reads
        that tell what happened to other jobs: watching boards then cost no more
        per change elsewhere on the board.
        """
        with self._local_lock:
            self._listeners.append(callback)
            if held_only:
                self._held_only.add(callback)

    def remove_listener(self, callback: Callable[[BoardEvent], None]) -> None:
        """Stop calling a callback added with :meth:`add_listener`."""
        with self._local_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)
            if callback not in self._listeners:
                self._held_only.discard(callback)

    def _wants_events(self, job_id: str | None) -> bool:
        """Whether some listener wants events about ``job_id`` (any job when None)."""
        listeners = self._listeners
        if not listeners:
            return False
        if len(self._held_only) < len(listeners):
            return True
        return job_id is not None and job_id in self._held

    def _emit(self, event: BoardEvent) -> None:
        """Apply an event to the local claim view, then tell listeners."""
        job_id = event.job_id
        if job_id is not None:
            self._apply_event(event)
        held = job_id is not None and job_id in self._held
        for callback in list(self._listeners):
            if not held and callback in self._held_only:
                continue
            try:
                callback(event)
            except Exception:  # a listener must never break the board
                log.exception("board listener %r failed", callback)

    def _apply_event(self, event: BoardEvent) -> None:
        """Mark a held claim lost when an event shows someone else ended or took it."""
        job_id = event.job_id
        assert job_id is not None
        with self._local_lock:
            if event.kind == "cancel_requested":
                self._cancel_flags.add(job_id)
                return
            held = self._held.get(job_id)
            if held is None or event.kind not in _CLAIM_ENDING_EVENTS:
                return
            data = event.data
            token = data.get("token")
            if isinstance(token, int) and token < held.token:
                return  # a late event about an earlier claim of a job we hold again
            ours = data.get("token") == held.token and (
                event.kind == "claimed" or data.get("owner") == held.owner
            )
            if event.kind == "expired":
                # Only the claim whose lease ran out is lost (not a newer claim of ours).
                if data.get("token") in (None, held.token):
                    self._lose(job_id)
            elif data.get("forced") or not ours:
                self._lose(job_id)

    def _lose(self, job_id: str) -> None:
        """Record a held claim as lost (caller holds the lock).

        Only a slim copy stays, without the job (and its store, up to the
        payload limit): enough for :meth:`claim_status` to answer ``LOST`` and
        for :meth:`held_claim` to say the claim was ours, until the owner's
        refused abandon or finish forgets it (:meth:`_forget_refused`).
        """
        held = self._held.get(job_id)
        if held is None:
            return
        self._lost.add(job_id)
        if held.job is not None:
            self._held[job_id] = replace(held, job=None)

    def _track(self, claim: Claim) -> Claim:
        with self._local_lock:
            self._held[claim.job_id] = claim
            self._lost.discard(claim.job_id)
            self._cancel_flags.discard(claim.job_id)
        return claim

    def _retrack(self, claim: Claim) -> None:
        """Store a renewed copy of a claim we still hold (keeps its flags)."""
        with self._local_lock:
            held = self._held.get(claim.job_id)
            lost = claim.job_id in self._lost
            if held is not None and held.token == claim.token and not lost:
                self._held[claim.job_id] = claim

    def _apply_renewals(self, renewed: Mapping[str, Claim | None]) -> None:
        """Record the outcome of a renew call in the local claim view."""
        for job_id, claim in renewed.items():
            if claim is None:
                self._mark_lost(job_id)
            else:
                self._retrack(claim)

    def _untrack(self, job_id: str) -> None:
        with self._local_lock:
            self._held.pop(job_id, None)
            self._lost.discard(job_id)
            self._cancel_flags.discard(job_id)

    def _mark_lost(self, job_id: str) -> None:
        with self._local_lock:
            self._lose(job_id)

    def _forget_refused(self, job_id: str, who: str, token: int | None) -> None:
        """The board refused our fenced write (``NotOwner``/``StaleToken``): the claim
        ``who``/``token`` is not ours any more, so forget it (a newer claim stays)."""
        with self._local_lock:
            held = self._held.get(job_id)
            if held is None or held.token != token or held.owner != who:
                return
            self._held.pop(job_id, None)
            self._lost.discard(job_id)
            self._cancel_flags.discard(job_id)

    def _holds_live_claims(self) -> bool:
        """Whether any held claim is not yet known lost (backends watch only for those)."""
        return len(self._held) > len(self._lost)

    def _mark_cancel(self, job_id: str) -> None:
        with self._local_lock:
            self._cancel_flags.add(job_id)

    def _connection_uncertain(self) -> bool:
        """True while the connection is suspended (session-bound backends)."""
        return False

    def claim_status(self, claim: Claim | str) -> ClaimStatus:
        """Whether this process still owns a claim, from local knowledge only.

        Costs no round trip: it reads the lease deadline kept locally (renewed
        by :meth:`renew`), claim-loss and release events pushed by the backend,
        and the connection state.
        """
        job_id = claim if isinstance(claim, str) else claim.job_id
        held = self._held.get(job_id)
        if held is None or job_id in self._lost:
            return ClaimStatus.LOST
        if isinstance(claim, Claim) and claim.token != held.token:
            return ClaimStatus.LOST
        if self._local_clock() >= held.deadline:
            return ClaimStatus.LOST
        if self._connection_uncertain():
            return ClaimStatus.UNCERTAIN
        return ClaimStatus.OWNED

    def claim_uncertain_since(self, claim: Claim | str) -> float | None:
        """Since when (this process's monotonic clock) the claim has been ``UNCERTAIN``.

        ``None`` while it is not uncertain. Session-bound backends return the
        moment their connection was suspended; lease-based ones never are.
        """
        return None

    def uncertain_claim_bound(self) -> float | None:
        """How many seconds an ``UNCERTAIN`` claim may still be trusted (``None``: no bound).

        Past it the owner must act as if the claim were lost: the server may
        already have ended it and handed the job to someone else. A
        session-bound backend returns a safe part of the negotiated session
        timeout; the conductor's claim listener stops the engine after it.
        """
        return None

    def cancel_requested(self, job: JobRef) -> bool:
        """Whether a cancel of one of our claimed jobs has reached us (local, no round trip)."""
        return job_id_of(job) in self._cancel_flags

    def held_claim(self, job: JobRef) -> Claim | None:
        """The latest local copy of our claim on ``job`` (with the renewed deadline)."""
        return self._held.get(job_id_of(job))

