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
import heapq
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, ClassVar

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, ZnodeStat

from jobboard import errors
from jobboard.model import BoardEvent, Job, JobRef
from jobboard.zookeeper.nodes import (
    VIEW_KINDS,
    Snapshot,
    active_job,
    due_of,
    id_parts,
    is_scheduled,
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


class View:
    """The local picture of active jobs, claims and cancel flags (caller holds the lock).

    Listings come from children watches; our own writes are applied at once as
    overrides, which a listing drops only when it was requested after the
    write (ZooKeeper answers one session's requests in order), so a listing
    already in flight never undoes a change we know about.
    """

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {kind: set() for kind in VIEW_KINDS}
        self.gen = dict.fromkeys(VIEW_KINDS, 0)
        self.pzxid = dict.fromkeys(VIEW_KINDS, -1)
        self.overrides: dict[str, dict[str, tuple[int, bool]]] = {k: {} for k in VIEW_KINDS}
        self.heaps: dict[str, list[tuple[int, int, str]]] = {}
        # Jobs posted for later, by due time; moved to their flow's heap once due.
        self.due: list[tuple[float, str]] = []
        # Jobs whose claim ended, not yet known to be waiting rather than finished
        # (the jobs/ listing is paced; one read of the job node settles it).
        self.unconfirmed: set[str] = set()
        self.loaded = False

    def listing(
        self, kind: str, children: Iterable[str], pzxid: int, sent_gen: int
    ) -> tuple[set[str], set[str]] | None:
        """Apply a children listing; returns (added, removed) or None if it was older."""
        if pzxid < self.pzxid[kind]:
            return None
        self.pzxid[kind] = pzxid
        members = {c for c in children if parse_id(c) is not None}
        overrides = self.overrides[kind]
        for job_id, (gen, present) in list(overrides.items()):
            if gen <= sent_gen:
                del overrides[job_id]
            elif present:
                members.add(job_id)
            else:
                members.discard(job_id)
        old = self.members[kind]
        self.members[kind] = members
        return members - old, old - members

    def local(self, kind: str, job_id: str, present: bool) -> bool:
        """Apply one of our own writes; True when it changed the view."""
        self.gen[kind] += 1
        self.overrides[kind][job_id] = (self.gen[kind], present)
        members = self.members[kind]
        if (job_id in members) == present:
            return False
        if present:
            members.add(job_id)
        else:
            members.discard(job_id)
        return True

    def push(self, job_id: str) -> None:
        parsed = parse_id(job_id)
        if parsed is not None:
            if is_scheduled(job_id):
                heapq.heappush(self.due, (due_of(job_id) or 0.0, job_id))
                return
            rank, flow, seq = parsed
            heapq.heappush(self.heaps.setdefault(flow, []), (rank, seq, job_id))

    def promote_due(self, now: float) -> None:
        """Move jobs whose due time came to their flow's heap (cheapest first)."""
        while self.due and self.due[0][0] <= now:
            _, job_id = heapq.heappop(self.due)
            if job_id in self.members["jobs"]:
                self.push(job_id)

    def next_due(self) -> float | None:
        """The earliest due time of a job posted for later that is still active."""
        while self.due and self.due[0][1] not in self.members["jobs"]:
            heapq.heappop(self.due)
        return self.due[0][0] if self.due else None

    def waiting(self, job_id: str) -> bool:
        return (
            job_id in self.members["jobs"]
            and job_id not in self.members["claims"]
            and job_id not in self.unconfirmed
            and not is_scheduled(job_id)
        )

    def best(self, flows: Collection[str] | None, pop: bool) -> str | None:
        """The best waiting job of ``flows`` (dropping stale heap entries); pop it if asked."""
        self.promote_due(time.time())
        best: tuple[tuple[int, int, str], list[tuple[int, int, str]]] | None = None
        for flow in list(self.heaps if flows is None else flows):
            heap = self.heaps.get(flow)
            while heap and not self.waiting(heap[0][2]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = (heap[0], heap)
        if best is None:
            return None
        if pop:
            heapq.heappop(best[1])
        return best[0][2]

    def spread(self, flows: Collection[str] | None, k: int) -> str | None:
        """Pop one of the ``k`` best waiting jobs of the best priority at random (to
        keep racing conductors off each other's heads); push the others back."""
        picked: list[str] = []
        while len(picked) < k and (job_id := self.best(flows, pop=True)) is not None:
            picked.append(job_id)
        if not picked:
            return None
        rank = id_parts(picked[0])[0]
        choice = random.choice([j for j in picked if id_parts(j)[0] == rank])
        for job_id in picked:
            if job_id != choice:
                self.push(job_id)
        return choice

    def active(self, flow: str | None) -> list[str]:
        """Active job ids in claim order."""
        ids = []
        for job_id in self.members["jobs"]:
            parsed = parse_id(job_id)
            if parsed is not None and (flow is None or parsed[1] == flow):
                ids.append((parsed[0], parsed[2], job_id))
        return [job_id for _, _, job_id in sorted(ids)]


class ZkView(ZkPauses):
    """The local view, kept by watches, and the reads of jobs it serves."""

    LISTING_COST: ClassVar[float]
    LISTING_INTERVAL_MAX: ClassVar[float]

    _changed: threading.Condition
    _view: View
    _static: dict[str, dict[str, Any]]
    _states: dict[str, tuple[dict[str, Any] | None, int | None]]
    _claims: dict[str, tuple[dict[str, Any], ZnodeStat]]
    _listed_at: dict[str, float]
    _dir_watchers: dict[str, Callable[[Any], None]]

    # -- watches and listings -------------------------------------------------

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
        result = self.client.get_children_async(
            self._path(kind), watch=self._dir_watchers[kind], include_data=True
        )
        result.rawlink(functools.partial(self._on_listing, kind, sent_gen))
        return result, sent_gen

    def _on_dir_event(self, kind: str, event: Any) -> None:
        if self._closed or event.type == EventType.NONE:
            return  # connection trouble: the state listener lists again on reconnect
        with self._lock:
            size = len(self._view.members[kind])
        pace = min(self.LISTING_INTERVAL_MAX, size * self.LISTING_COST)
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

    def _on_listing(self, kind: str, sent_gen: int, result: Any) -> None:
        try:
            children, stat = result.get_nowait()
        except (KazooException, KazooTimeoutError) as err:
            log.debug("%s: %s listing failed: %s", self, kind, err)
            return
        if not self._closed:
            self._apply_listing(kind, children, stat.pzxid, sent_gen)

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
            if kind == "jobs":
                for job_id in added:
                    self._view.push(job_id)
                    events.append(BoardEvent("posted", job_id, {"flow": id_parts(job_id)[1]}))
                for job_id in removed:
                    self._forget_caches(job_id)
                    self._view.unconfirmed.discard(job_id)
                    reads.append(("done", job_id))
            elif kind == "claims":
                for job_id in added | removed:
                    self._states.pop(job_id, None)
                    self._claims.pop(job_id, None)
                for job_id in removed:
                    if job_id in self._view.members["jobs"]:
                        self._view.unconfirmed.add(job_id)
                        released.append(job_id)
                        reads.append(("state", job_id))
                reads.extend(("claims", job_id) for job_id in added)
            else:
                for job_id in added:
                    if job_id in self._held:
                        self._mark_cancel(job_id)
                    events.append(BoardEvent("cancel_requested", job_id, {}))
            self._changed.notify_all()
        for job_id in released:
            self._confirm_waiting(job_id)
        if self._listeners and self._view.loaded:
            for event in events:
                self._emit(event)
            for where, job_id in reads:
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

    def _watch_claim(self, job_id: str, into: list[Any]) -> None:
        """Send a watching read of a claim node (pipelined behind the claim itself)."""
        into.append(self.client.get_async(self._path("claims", job_id), watch=self._on_claim_event))

    def _on_claim_event(self, event: Any) -> None:
        if not self._closed and event.type != EventType.NONE:
            self._verify_claim(event.path.rpartition("/")[2])

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
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
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

    def _job(self, snap: Snapshot) -> Job:
        """The Job a snapshot describes; ``JobNotFound`` when there is none."""
        if snap.done is not None:
            return snap.done
        if snap.static is None:
            raise errors.JobNotFound(f"no job {snap.job_id!r} on board {self.name!r}")
        return active_job(
            snap.job_id, snap.static, snap.state, snap.claim, snap.claim_stat, snap.cancel
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
                out.append(active_job(job_id, static, state, claim, stat, job_id in cancels))
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
