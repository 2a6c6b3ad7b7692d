"""The watch-maintained local view of a ZooKeeper board, and reading jobs.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Children watches on ``jobs/``, ``claims/`` and ``cancel/``
keep a :class:`View` of active jobs, claims and cancel flags, from which
``claim_next``, ``iterjobs``, ``job_count`` and ``wait`` answer without
listing per call. A burst of changes is listed at a pace that grows with the
folder. Each claim of ours is read with a watch, so its loss is pushed; the
job, state and claim nodes read are cached (job nodes never change, state and
claim data are dropped when the job's claim changes).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, ZnodeStat

from jobboard import errors
from jobboard.model import BoardEvent, Job, JobRef
from jobboard.zookeeper.listing import list_children_async
from jobboard.zookeeper.localview import View
from jobboard.zookeeper.nodes import (
    VIEW_KINDS,
    Snapshot,
    active_job,
    id_parts,
    load,
    node_event,
    parse_id,
    read_claim,
    read_done,
    read_state,
    read_static,
)
from jobboard.zookeeper.pauses import ZkPauses
from jobboard.zookeeper.session import log


class ZkView(ZkPauses):
    """The local view, kept by watches, and the reads of jobs it serves."""

    LISTING_COST: ClassVar[float]
    LISTING_INTERVAL_MAX: ClassVar[float]
    LISTING_INTERVAL_MIN: ClassVar[float]

    _changed: threading.Condition
    _view: View
    _static: dict[str, dict[str, Any]]
    _states: dict[str, tuple[dict[str, Any] | None, int | None]]
    _claims: dict[str, tuple[dict[str, Any], ZnodeStat]]
    #: Jobs whose claim node our own write in flight deletes (consume, fail, abandon).
    _dropping: set[str]
    _listed_at: dict[str, float]
    _dir_watchers: dict[str, Callable[[Any], None]]
    _quiet_kinds: set[str]
    #: A change of ``jobs/`` was seen and not listed yet; listings of it sent so far.
    _jobs_dirty: bool
    _jobs_sent: int
    #: Jobs whose claim ended, left to the next listing of ``jobs/`` (value: the
    #: listings sent when the claim's end was seen).
    _deferred: dict[str, int]

    # -- watches and listings -------------------------------------------------

    def _view_changed(self) -> None:
        """Jobs may have become waiting in the view (see ``waiters``)."""

    def _quiet(self, kind: str) -> bool:
        """Whether a changed folder may go unlisted for now (see ``waiters``); the
        folders left so are kept in ``_quiet_kinds``."""
        return False

    def _load_views(self) -> None:
        """List jobs, claims and cancel flags with watches (at connect and reconnect)."""
        pending = [(kind, self._watch_dir(kind)) for kind in VIEW_KINDS]
        for kind, (result, sent_gen) in pending:
            children, stat = result.get(timeout=self.session_timeout)
            self._apply_listing(kind, children, stat.pzxid, sent_gen)
        with self._lock:
            self._view.loaded = True

    def _watch_dir(self, kind: str) -> tuple[Any, int]:
        with self._lock:
            sent_gen = self._view.gen[kind]
            if kind == "jobs":
                self._jobs_sent += 1
                self._jobs_dirty = False
            sent_no = self._jobs_sent
        result = list_children_async(self.client, self._path(kind), self._dir_watchers[kind])
        result.rawlink(functools.partial(self._on_listing, kind, sent_gen, sent_no))
        return result, sent_gen

    def _on_dir_event(self, kind: str, event: Any) -> None:
        if self._closed or event.type == EventType.NONE:
            return  # connection trouble: the state listener lists again on reconnect
        with self._lock:
            if self._quiet(kind):  # queued behind another idle board: listed when first
                self._quiet_kinds.add(kind)
                return
        with self._lock:
            size = len(self._view.members[kind])
            if kind == "jobs":
                self._jobs_dirty = True  # a listing of jobs/ will follow
        pace = min(
            self.LISTING_INTERVAL_MAX, max(self.LISTING_INTERVAL_MIN, size * self.LISTING_COST)
        )
        wait = self._listed_at[kind] + pace - time.monotonic()
        if wait > 0:
            self._later(f"list {kind}", wait, functools.partial(self._relist, kind))
        else:
            self._relist(kind)

    def _relist(self, kind: str) -> None:
        self._listed_at[kind] = time.monotonic()
        try:
            self._watch_dir(kind)
        except (KazooException, errors.BoardError) as err:
            log.debug("%s: could not re-arm the %s watch: %s", self, kind, err)

    def _on_listing(self, kind: str, sent_gen: int, sent_no: int, result: Any) -> None:
        try:
            children, stat = result.get_nowait()
        except (KazooException, KazooTimeoutError) as err:
            log.debug("%s: %s listing failed: %s", self, kind, err)
            return
        if not self._closed:
            self._apply_listing(kind, children, stat.pzxid, sent_gen)
            if kind == "jobs" and self._deferred:
                self._settle_deferred(sent_no)

    def _settle_deferred(self, sent_no: int) -> None:
        """A listing of ``jobs/`` sent after a claim ended tells whether its job is
        waiting again (still listed) or finished (gone): no read of its node."""
        with self._lock:
            settled = [j for j, mark in self._deferred.items() if mark < sent_no]
            waiting = False
            for job_id in settled:
                del self._deferred[job_id]
                if job_id in self._view.unconfirmed:
                    self._view.unconfirmed.discard(job_id)
                    if job_id in self._view.members["jobs"]:
                        self._view.push(job_id)
                        waiting = True
            if waiting:
                self._changed.notify_all()
        if waiting:
            self._view_changed()

    def _refresh_views(self) -> None:
        """Fresh listings of jobs, claims and cancel flags (``ensure_fresh``)."""

        def read() -> None:
            with self._lock:
                gens = dict(self._view.gen)
            listings = self._gather([("listing", self._path(kind)) for kind in VIEW_KINDS])
            for kind, listing in zip(VIEW_KINDS, listings, strict=True):
                if listing is not None:
                    self._apply_listing(kind, listing[0], listing[1].pzxid, gens[kind])

        self._read(read, "list jobs")

    def _apply_listing(self, kind: str, children: list[str], pzxid: int, sent_gen: int) -> None:
        events: list[BoardEvent] = []
        reads: list[tuple[str, str]] = []
        released: list[str] = []
        with self._lock:
            diff = self._view.listing(kind, children, pzxid, sent_gen)
            if diff is None:
                return
            added, removed = diff
            if not added and not removed:
                return
            # Events (and the reads that tell what a change did) only for listeners
            # that want them: a conductor's listener wants its own claims' only.
            tell = self._view.loaded and self._wants_events(None)
            if kind == "jobs":
                for job_id in removed:
                    self._forget_caches(job_id)
                    self._view.unconfirmed.discard(job_id)
                if tell:
                    events += [BoardEvent("posted", j, {"flow": id_parts(j)[1]}) for j in added]
                reads += [("done", job_id) for job_id in removed]
            elif kind == "claims":
                for job_id in added | removed:
                    self._states.pop(job_id, None)
                    self._claims.pop(job_id, None)
                for job_id in removed:
                    if job_id in self._view.members["jobs"]:
                        self._view.unconfirmed.add(job_id)
                        released.append(job_id)
                        if self._jobs_dirty:  # settled by the listing of jobs/ to come
                            self._deferred[job_id] = self._jobs_sent
                reads += [("state", job_id) for job_id in released]
                # our own live claim told its event already (its watch tells its loss)
                reads += [("claims", job_id) for job_id in added - (self._held.keys() - self._lost)]
            else:
                for job_id in added:
                    if job_id in self._held:
                        self._mark_cancel(job_id)
                    if tell or job_id in self._held:
                        events.append(BoardEvent("cancel_requested", job_id, {}))
            self._changed.notify_all()
        for job_id in released:
            if job_id not in self._deferred:
                self._confirm_waiting(job_id)
        if kind != "cancel":
            self._view_changed()
        if self._listeners and self._view.loaded:
            for event in events:
                self._emit(event)
            for where, job_id in reads:
                if self._wants_events(job_id):
                    self._observe(where, job_id)

    def _confirm_waiting(self, job_id: str) -> None:
        """A claim ended: is the job waiting again, or finished? Ask its node."""
        client = self._client
        if client is not None and not self._closed:
            result = client.exists_async(self._path("jobs", job_id))
            result.rawlink(functools.partial(self._confirmed, job_id))

    def _confirmed(self, job_id: str, result: Any) -> None:
        try:
            exists = result.get_nowait() is not None
        except (KazooException, KazooTimeoutError):
            exists = True  # unknown: let a claim attempt find out
        with self._lock:
            if job_id not in self._view.unconfirmed:
                return
            self._view.unconfirmed.discard(job_id)
            if exists:
                self._view.push(job_id)
                self._changed.notify_all()
            else:
                self._view.members["jobs"].discard(job_id)
        if exists:
            self._view_changed()

    def _observe(self, where: str, job_id: str) -> None:
        """Read what a watched change did, then tell listeners (only when there are any)."""
        client = self._client
        if client is not None and not self._closed:
            result = client.get_async(self._path(where, job_id))
            result.rawlink(functools.partial(self._observed, where, job_id))

    def _observed(self, where: str, job_id: str, result: Any) -> None:
        try:
            data = load(result.get_nowait()[0], where)
        except (KazooException, KazooTimeoutError, errors.BoardError):
            return
        if data is not None:
            self._emit(node_event(where, job_id, data))

    def _local(self, kind: str, job_id: str, present: bool) -> None:
        """Apply one of our own writes to the view at once (read-your-writes).

        The claims watch may answer before our own write's answer is applied
        (the server sends the event first): its listing has then already dropped
        the claim and left the job unconfirmed, its heap entry gone. Our write
        settles it, so the job goes back on the heap here, not on confirmation."""
        with self._lock:
            unconfirmed = job_id in self._view.unconfirmed
            self._view.unconfirmed.discard(job_id)
            changed = self._view.local(kind, job_id, present)
            if (changed or unconfirmed) and (
                kind == "jobs" and present or kind == "claims" and not present
            ):
                self._view.push(job_id)
            self._changed.notify_all()

    def _forget_caches(self, job_id: str) -> None:
        self._static.pop(job_id, None)
        self._states.pop(job_id, None)
        self._claims.pop(job_id, None)

    def _resync(self) -> None:
        """After a reconnect: list again with watches and re-check our claims."""
        self._read(self._load_views, "resync")
        for job_id in list(self._held):
            self._verify_claim(job_id)

    # -- our claims, watched ----------------------------------------------------

    def _verify_claim(self, job_id: str) -> None:
        """Ask for our claim node with a watch: its removal or change is pushed to us."""
        held = self._held.get(job_id)
        if held is None or self._client is None:
            return
        result = self._client.get_async(self._path("claims", job_id), watch=self._on_claim_event)
        result.rawlink(functools.partial(self._claim_verified, job_id, held.token))

    def _watch_claim(self, job_id: str, into: list[Any]) -> Any:
        """Send a watching read of a claim node (pipelined behind the claim itself)."""
        into.append(self.client.get_async(self._path("claims", job_id), watch=self._on_claim_event))
        return into[-1]

    def _on_claim_event(self, event: Any) -> None:
        job_id = (event.path or "").rpartition("/")[2]
        ours = event.type == EventType.DELETED and job_id in self._dropping  # see _drop_own_claim
        if not (self._closed or event.type == EventType.NONE or ours):
            self._verify_claim(job_id)

    def _claim_verified(self, job_id: str, token: int, result: Any) -> None:
        try:
            data, _ = result.get_nowait()
        except NoNodeError:
            data = None
        except (KazooException, KazooTimeoutError):
            return  # the state listener handles connection trouble
        held = self._held.get(job_id)
        if held is None or held.token != token:
            return
        try:
            claim = load(data, "claim")
        except errors.InvalidJob:
            claim = None
        if claim is None or claim.get("token") != token or claim.get("owner") != held.owner:
            log.info("%s: claim on %s (token %s) is gone", self, job_id, token)
            self._mark_lost(job_id)

    # -- reading jobs -----------------------------------------------------------

    def _require_id(self, job: JobRef) -> str:
        job_id = self._job_id(job)
        if parse_id(job_id) is None:
            raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
        return job_id

    def _snapshot(self, job_id: str) -> Snapshot:
        """Read job, state, claim, cancel flag and finished record in one round trip."""
        static = self._static.get(job_id)
        jobs, state, claim, cancel, done = self._gather(
            [
                ("exists" if static is not None else "get", self._path("jobs", job_id)),
                ("get", self._path("state", job_id)),
                ("get", self._path("claims", job_id)),
                ("exists", self._path("cancel", job_id)),
                ("get", self._path("done", job_id)),
            ]
        )
        if done is not None:
            finished = read_done(done[0], job_id)
            return Snapshot(job_id, None, None, None, None, None, False, finished)
        if jobs is None:
            return Snapshot(job_id, None, None, None, None, None, False, None)
        if static is None:
            static = read_static(jobs[0], job_id)
            with self._lock:
                if job_id in self._view.members["jobs"]:
                    self._static[job_id] = static
        return Snapshot(
            job_id,
            static,
            read_state(state[0], job_id) if state else None,
            state[1].version if state else None,
            read_claim(claim[0], job_id) if claim else None,
            claim[1] if claim else None,
            cancel is not None,
            None,
        )

    def _job(self, snap: Snapshot, now: float | None = None) -> Job:
        """The Job a snapshot describes at server time ``now`` (by default the board's
        reckoning of it, by which every lease is judged); ``JobNotFound`` when
        there is none."""
        if snap.done is not None:
            return snap.done
        if snap.static is None:
            raise errors.JobNotFound(f"no job {errors.shown(snap.job_id)} on board {self.name!r}")
        now = self._time.now() if now is None else now
        return active_job(
            snap.job_id, snap.static, snap.state, snap.claim, snap.claim_stat, snap.cancel, now
        )

    def _active_jobs(self, ids: list[str], fresh: bool) -> list[Job]:
        """Jobs of the view: static parts from the cache, state and claims from it too
        unless ``fresh`` (leased claims are always read: their expiry moves)."""
        with self._lock:
            claimed = self._view.members["claims"]
            cancels = set(self._view.members["cancel"])
            need_static = [i for i in ids if i not in self._static]
            need_state = [i for i in ids if fresh or i not in self._states]
            need_claim = [
                i
                for i in ids
                if i in claimed
                and (fresh or i not in self._claims or self._claims[i][0].get("lease") is not None)
            ]
        calls = [("get", self._path("jobs", i)) for i in need_static]
        calls += [("get", self._path("state", i)) for i in need_state]
        calls += [("get", self._path("claims", i)) for i in need_claim]
        results = iter(self._gather(calls))
        out = []
        now = self._time.now()
        with self._lock:
            for job_id in need_static:
                found = next(results)
                if found is not None:
                    self._static[job_id] = read_static(found[0], job_id)
            for job_id in need_state:
                found = next(results)
                self._states[job_id] = (
                    (read_state(found[0], job_id), found[1].version) if found else (None, None)
                )
            fetched_claims = {}
            for job_id in need_claim:
                found = next(results)
                if found is not None:
                    fetched_claims[job_id] = (read_claim(found[0], job_id), found[1])
                    self._claims[job_id] = fetched_claims[job_id]
            for job_id in ids:
                static = self._static.get(job_id)
                if static is None:
                    continue  # finished meanwhile
                claim: dict[str, Any] | None = None
                stat: ZnodeStat | None = None
                if job_id in claimed:
                    kept = fetched_claims.get(job_id) or self._claims.get(job_id)
                    if kept is not None:
                        claim, stat = kept
                state = self._states.get(job_id, (None, None))[0]
                out.append(active_job(job_id, static, state, claim, stat, job_id in cancels, now))
        return out

    def _finished_jobs(self) -> list[Job]:
        names = [
            n for n in self._gather([("get_children", self._path("done"))])[0] or [] if parse_id(n)
        ]
        found = self._gather([("get", self._path("done", n)) for n in names])
        return [read_done(f[0], n) for n, f in zip(names, found, strict=True) if f]

    @property
    def job_count(self) -> int:
        """Number of unfinished jobs, from the local view."""
        with self._lock:
            return len(self._view.members["jobs"])
