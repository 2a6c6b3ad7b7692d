"""Idle boards queue on a ZooKeeper board, so that a post wakes one of them.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Without it every idle conductor watches ``jobs/`` and
``claims/``, so every post wakes all of them (a thundering herd). Instead, a
board whose ``wait`` finds no work joins the queue of its flows:
``waiters/<key>/w-<seq>``, an ephemeral sequential node (``key`` names the set
of flows). Only the first in line (the *head*) keeps its ``jobs/`` and
``claims/`` watches and wakes for work; each other one watches only the node
just before its own (an ``exists`` watch) and lets its folder watches lapse.

The head stays first while it runs the job it took, so that at low load the
same board takes job after job with no hand-over at all. The turn passes on,
so that no job waits while an idle board sleeps:

* when a job is waiting while the head is busy (it claimed since it last
  waited), the head deletes its waiter node; the next in line is told at once
  (its predecessor's node is gone), lists ``jobs/`` and ``claims/`` again
  with watches and takes the job; the busy board stays out of the queues
  (with a live view) until it waits again;
* a head that stops (``stop_waiting``, ``close``, or its session ending)
  loses its node the same way;
* a board that takes a claim with a lease leaves every queue at once, and
  waits out of them (with a live view) while it holds a leased claim: its
  waiter node lives as long as its session, which may outlast the lease, and
  a silent owner at the head would keep the board behind it from reaping the
  lapsed lease until the session ended. Session-bound claims end with the
  session, so a head keeps its place while it runs them.

A board keeps one place per set of flows; ``claim_next`` of a board that is
queued behind another returns None without a request.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType

from jobboard.zookeeper.cancel import ZkCancel
from jobboard.zookeeper.nodes import VIEW_KINDS
from jobboard.zookeeper.session import log

#: The name of a waiter node (``w-`` and ZooKeeper's 10-digit sequence).
WAITER_RE = re.compile(r"^w-\d{10}$")
#: The folders only the head of a queue keeps watching.
QUIET_KINDS = frozenset({"jobs", "claims"})


@dataclass(slots=True)
class Place:
    """Our place in one queue of waiters."""

    key: str
    path: str
    flows: frozenset[str] | None
    head: bool = False
    #: Claimed a job since it last waited (it then hands its turn on when work waits).
    busy: bool = False


@functools.lru_cache(maxsize=64)
def queue_key(flows: frozenset[str] | None) -> str:
    """The queue of boards waiting for ``flows`` (all flows when None)."""
    if flows is None:
        return "any"
    digest = hashlib.sha1("\n".join(sorted(flows)).encode()).hexdigest()[:16]
    return f"f{digest}"


class ZkWaiters(ZkCancel):
    """Queues of idle boards: one wakes per change (see the module docstring)."""

    _places: dict[str, Place]
    _quiet_kinds: set[str]

    def _init_waiters(self) -> None:
        """The state of the queues, and of the view's deferred confirmations."""
        self._places = {}
        self._quiet_kinds = set()
        self._jobs_dirty = False
        self._jobs_sent = 0
        self._deferred = {}

    def _place(self, flows: frozenset[str] | None) -> Place | None:
        if not self._places:
            return None
        with self._lock:
            return self._places.get(queue_key(flows))

    def _queued_behind(self, flows: frozenset[str] | None) -> bool:
        """Whether this board waits behind another for ``flows`` (it then claims nothing)."""
        place = self._place(flows)
        return place is not None and not place.head

    def _quiet(self, kind: str) -> bool:
        """Whether a folder's watch may lapse: queued behind others for every flow set."""
        with self._lock:
            places = list(self._places.values())
        return kind in QUIET_KINDS and bool(places) and not any(p.head for p in places)

    def _join(self, flows: frozenset[str] | None) -> Place:
        """Take a place at the end of the queue of ``flows``; then find out if it is first."""
        key = queue_key(flows)
        folder = self._path("waiters", key)

        def create(uncertain: bool) -> str:
            if uncertain:  # an earlier create may have gone through: drop its node
                self._drop_own_waiters(folder)
            try:
                path: str = self._call(
                    "create", f"{folder}/w-", b"", ephemeral=True, sequence=True,
                    **self._create_kwargs(),
                )  # fmt: skip
            except NoNodeError:
                try:
                    self._call("create", folder, b"", **self._create_kwargs())
                except NodeExistsError:
                    pass
                raise
            return path

        # A sequential create is not idempotent, but a lost node of ours is only an
        # ephemeral waiter: the head would at worst wait behind its own old place.
        path = self._retrying(f"join the waiters of {key}", lambda u: self._no_folder(create, u))
        place = Place(key, path, flows)
        with self._lock:
            self._places[key] = place
        self._find_head(place)
        return place

    @staticmethod
    def _no_folder(create: Any, uncertain: bool) -> Any:
        """Create, once more after creating the missing folder."""
        try:
            return create(uncertain)
        except NoNodeError:
            return create(uncertain)

    def _drop_own_waiters(self, folder: str) -> None:
        """Delete waiter nodes of our session in ``folder`` (left by an uncertain create)."""
        session = self._client.client_id[0] if self._client and self._client.client_id else None
        names = self._gather([("get_children", folder)])[0] or []
        stats = self._gather([("exists", f"{folder}/{n}") for n in names])
        for name, stat in zip(names, stats, strict=True):
            if stat is not None and stat.ephemeralOwner == session:
                try:
                    self._call("delete", f"{folder}/{name}")
                except NoNodeError:
                    pass

    def _find_head(self, place: Place) -> None:
        """Become head when no earlier waiter is left, else watch the one just before us."""
        folder, _, mine = place.path.rpartition("/")
        while True:
            with self._lock:
                if self._places.get(place.key) is not place or self._closed:
                    return
            try:
                children = self._call("get_children", folder)
            except (KazooException, KazooTimeoutError) as err:
                log.debug("%s: waiters of %s not listed: %s", self, place.key, err)
                return  # the state listener re-checks after a reconnect
            if mine not in children:  # our node is gone (a new session): join again later
                with self._lock:
                    if self._places.get(place.key) is place:
                        del self._places[place.key]
                    self._changed.notify_all()
                return
            # Only waiter nodes count: a stray node must not block the queue.
            earlier = sorted(c for c in children if c < mine and WAITER_RE.match(c))
            if not earlier:
                self._become_head(place)
                return
            watcher = functools.partial(self._on_predecessor, place)
            try:
                found = self._call("exists", f"{folder}/{earlier[-1]}", watch=watcher)
            except (KazooException, KazooTimeoutError) as err:
                log.debug("%s: predecessor of %s not watched: %s", self, place.path, err)
                return
            if found is not None:
                return  # woken when it goes

    def _on_predecessor(self, place: Place, event: Any) -> None:
        if self._closed or event.type == EventType.NONE:
            return
        self.client.handler.spawn(self._find_head, place)

    def _become_head(self, place: Place) -> None:
        """First in line: list the folders that went quiet again, with watches."""
        with self._lock:
            if self._places.get(place.key) is not place:
                return
            place.head = True  # from now on folder events are listed as they come
            stale = set(self._quiet_kinds)
            self._quiet_kinds.clear()
        pending = [(kind, self._watch_dir(kind)) for kind in VIEW_KINDS if kind in stale]
        for kind, (result, sent_gen) in pending:
            try:
                children, stat = result.get(timeout=self.session_timeout)
            except (KazooException, KazooTimeoutError) as err:
                log.debug("%s: %s listing as head failed: %s", self, kind, err)
                continue  # the state listener lists again after a reconnect
            self._apply_listing(kind, children, stat.pzxid, sent_gen)
        with self._lock:
            self._changed.notify_all()

    def _holds_lease(self) -> bool:
        """Whether this board holds a claim with a lease (it then stays out of queues)."""
        with self._local_lock:
            return any(
                c.lease is not None and i not in self._lost for i, c in self._held.items()
            )

    def _took(
        self, flows: frozenset[str] | None, lease: float | None, *, every: bool = False
    ) -> None:
        """A claim was made: a leased one takes this board out of every queue
        (see the module docstring), a session-bound one makes it busy."""
        if lease is None:
            self._busy(flows, every=every)
        elif self._places:
            self.stop_waiting()

    def _busy(self, flows: frozenset[str] | None, *, every: bool = False) -> None:
        """A claim was made (by ``claim_next`` for ``flows``, or by ``claim``: ``every``
        place): until this board waits again, hand the turn on when work waits."""
        if not self._places:
            return
        with self._lock:
            key = queue_key(flows)
            places = [p for p in self._places.values() if every or p.key == key]
            if not places:
                return
            for place in places:
                place.busy = True
        self._view_changed()

    def _waiting_again(self, flows: frozenset[str] | None) -> None:
        if not self._places:
            return
        with self._lock:
            place = self._places.get(queue_key(flows))
            if place is not None:
                place.busy = False

    def _view_changed(self) -> None:
        """Work may be waiting: a busy head hands its turn to the next in line."""
        with self._lock:
            if not self._places:
                return
            leaving = [
                p
                for p in self._places.values()
                if p.head and p.busy and self._view.best(p.flows, pop=False) is not None
            ]
            for place in leaving:
                del self._places[place.key]
        client = self._client
        if leaving and client is not None:
            for place in leaving:
                client.delete_async(place.path)

    def _wake_view(self) -> None:
        """Watch the quiet folders again (a board out of every queue needs a live view)."""
        with self._lock:
            if any(p.head for p in self._places.values()) or not self._quiet_kinds:
                stale: set[str] = set()
            else:
                stale, self._quiet_kinds = set(self._quiet_kinds), set()
        for kind in stale:
            self._relist(kind)

    def stop_waiting(self) -> None:
        """Leave every queue of waiters: the next board in line takes over at once."""
        with self._lock:
            places, self._places = list(self._places.values()), {}
            self._changed.notify_all()
        client = self._client
        if client is not None and places:
            for place in places:
                client.delete_async(place.path)
        self._wake_view()

    def _forget_places(self) -> None:
        """A new session: our ephemeral waiter nodes are gone."""
        with self._lock:
            self._places.clear()
            self._quiet_kinds.clear()
            self._changed.notify_all()
