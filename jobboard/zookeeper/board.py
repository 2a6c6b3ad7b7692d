"""ZooKeeper job board (``zookeeper://h1:2181,h2:2181/chroot?namespace=...``).

Claims are **ephemeral** znodes owned by the claimant's ZooKeeper session: a
conductor that dies or loses its session loses its claims by ZooKeeper's own
guarantee, within the session timeout. The node layout under
``<chroot>/<namespace>`` is described in :mod:`jobboard.zookeeper.nodes`.

Every change is one multi-op transaction. A claim creates the claim node and
writes the state node (version-checked) together, so the token in ``state``
grows by one per claim. Every fenced write checks the state node's version (no
one claimed since) and the claim node's version (our session still holds it)
inside the same transaction as the write, so a stale owner changes nothing.

A local view of ``jobs/``, ``claims/`` and ``cancel/`` kept by children watches
serves ``claim_next``, ``iterjobs``, ``find_owner`` and ``wait`` without listing
children per call; the job's priority and flow come from its name, so claiming
needs no read. Loss of our own claims is pushed by a watch on each claim node
and by the session state (SUSPENDED: uncertain; LOST: lost). See
``docs/zookeeper.md``.

:class:`ZookeeperBoard` is built in layers, one private module each, every
layer using the ones below it:

* ``nodes``: node layout, JSON records, jobs and events read from nodes;
* ``session``: requests, retries, connection state, counters, entities
  (with ``liveness``: the granted session timeout, when the server last spoke);
* ``view``: the watch-maintained local view, and reading jobs;
* ``writes``: fences and fenced writes (progress, finish, abandon, cancel);
* ``leases``: renewing leases, waiting for work and for other owners' leases to lapse;
* ``claims``: claiming (and trashing poison and unreadable jobs);
* ``consumenext``: ``consume_and_claim_next`` as one transaction;
* ``producers``: dedupe keys, ``wait_for`` watches, children, the record store;
* this module: the board's tunables, state and life cycle, posting, listing
  and retention.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import math
import threading
import time
import uuid
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Permissions, make_digest_acl

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.changes import NewJob
from jobboard.model import ACTIVE_STATES, FINISHED_STATES, BoardEvent, Job, JobRef, JobState
from jobboard.urls import coerce_options, number_option, parse_options, redact_url
from jobboard.zookeeper.liveness import ServerTime, SessionClock
from jobboard.zookeeper.localview import View
from jobboard.zookeeper.nodes import (
    NAMESPACE_RE,
    VIEW_KINDS,
    active_job,
    due_of,
    is_live,
    job_prefix,
    parse_id,
    read_claim,
    read_done,
)
from jobboard.zookeeper.producers import ZkProducers
from jobboard.zookeeper.session import Pacer, Refused, log

__all__ = ["ZookeeperBoard"]


@functools.cache
def _known_options() -> frozenset[str]:
    """The keyword options a ZooKeeper board takes (its own and the common ones)."""
    names = set(inspect.signature(JobBoard.__init__).parameters)
    names |= set(inspect.signature(ZookeeperBoard.__init__).parameters)
    return frozenset(names - {"self", "options", "hosts", "chroot"}) | {"name"}


class ZookeeperBoard(ZkProducers):
    """A job board on ZooKeeper (kazoo); claims are bound to the owner's session.

    Open it from a URL (``zookeeper://h1:2181,h2:2181/chroot?namespace=prod&
    session_timeout=10&digest=user:password``) or pass a started ``client``
    (which the board then never stops). Claims made without an explicit lease
    last as long as the session (``Claim.deadline`` is infinite and ``renew``
    only checks the local view); a lease given to the board or to ``claim``
    additionally ends the claim when the owner stops renewing it.
    """

    scheme = "zookeeper"
    #: ZooKeeper refuses requests over ``jute.maxbuffer`` (1 MiB): the finishing
    #: transaction carries the job (store and details) and its result, so each
    #: of them stays under 400 KiB.
    DEFAULT_MAX_PAYLOAD = 400 * 1024
    #: Largest request the board sends, in bytes (below ZooKeeper's 1 MiB limit).
    REQUEST_LIMIT = 1_000_000
    #: Requested session timeout in seconds: how long a dead owner keeps its claims.
    DEFAULT_SESSION_TIMEOUT = 10.0
    #: Seconds ``connect`` waits for the first session.
    CONNECT_TIMEOUT = 15.0
    #: Path prefix under which namespaces live when the URL names none.
    DEFAULT_CHROOT = "/jobboard"
    #: How long an idempotent operation is retried across connection trouble.
    RETRY_DEADLINE = 15.0
    #: Optimistic rounds of one claim (or fenced write) before it gives up.
    MAX_ROUNDS = 8
    #: Our claims count as lost once the server has not been heard from for the
    #: session timeout it granted less this fraction of it (at least 0.1 s): the
    #: margin covers the round trip of the last answer and local scheduling.
    SESSION_SAFETY_MARGIN = 0.15
    #: Minimum seconds between two retention sweeps started by ``post``.
    RETENTION_SWEEP_INTERVAL = 60.0
    #: Minimum seconds between two looks for lapsed leases by an idle ``claim_next``.
    LEASE_CHECK_INTERVAL = 0.5
    #: Pacing of the listings of one watched folder, in seconds per child listed,
    #: up to ``LISTING_INTERVAL_MAX``: a change after a quiet spell is listed at
    #: once, a burst at a pace that grows with the folder (each listing carries
    #: every child, so one listing per change would cost O(backlog^2)).
    LISTING_COST = 2e-4
    LISTING_INTERVAL_MAX = 1.0
    #: ...and at least ``LISTING_INTERVAL_MIN`` apart, so that a busy board lists a
    #: small folder once per burst of changes rather than once per change.
    LISTING_INTERVAL_MIN = 0.02
    #: After losing a race for a job, ``claim_next`` picks at random among the
    #: ``CLAIM_SPREAD`` best jobs of the best priority for ``CONTENTION_MEMORY``
    #: seconds (FIFO within a priority then holds up to that many places).
    CLAIM_SPREAD = 32
    CONTENTION_MEMORY = 1.0

    def __init__(
        self,
        name: str = "default",
        *,
        hosts: str = "127.0.0.1:2181",
        chroot: str | None = None,
        client: KazooClient | None = None,
        session_timeout: float | None = None,
        connect_timeout: float | None = None,
        digest: str | None = None,
        **options: Any,
    ) -> None:
        self._explicit_lease = options.get("lease") is not None
        super().__init__(name, **options)
        if not NAMESPACE_RE.match(self.namespace):
            raise errors.BadURL(
                f"board {name!r}: namespace must match {NAMESPACE_RE.pattern}, "
                f"got {self.namespace!r}"
            )
        chroot = (chroot or self.DEFAULT_CHROOT).rstrip("/")
        if not chroot.startswith("/") or "//" in chroot:
            raise errors.BadURL(f"board {name!r}: chroot must be an absolute path, got {chroot!r}")
        if digest is not None and ":" not in digest:
            raise errors.BadURL(f"board {name!r}: option 'digest' must be user:password")
        self.hosts = hosts
        self.root = f"{chroot}/{self.namespace}"
        #: The session timeout asked for, and (once connected) the one granted.
        self.requested_session_timeout = float(session_timeout or self.DEFAULT_SESSION_TIMEOUT)
        self.session_timeout = self.requested_session_timeout
        self._clock = SessionClock(self.requested_session_timeout, self.SESSION_SAFETY_MARGIN)
        self._time = ServerTime()
        self.connect_timeout = float(connect_timeout or self.CONNECT_TIMEOUT)
        # The session (session).
        self._digest = digest
        self._acl = None
        if digest is not None:
            user, _, password = digest.partition(":")
            self._acl = [
                make_digest_acl(user, password, all=True),
                ACL(Permissions.READ, ANYONE_ID_UNSAFE),
            ]
        self._client = client
        self._owns_client = client is None
        self._instance = uuid.uuid4().hex
        self._lock = threading.RLock()
        self._retry = KazooRetry(
            max_tries=-1,
            delay=0.05,
            backoff=2,
            max_jitter=0.5,
            max_delay=1.0,
            deadline=self.RETRY_DEADLINE,
            ignore_expire=True,
        )
        self._pacer = Pacer(f"jobboard-{self.namespace}-pacer")
        self._session_id = None
        self._connected = False
        self._closed = False
        self._counter_seq = itertools.count()
        self._entities = {}
        # The local view (view).
        self._changed = threading.Condition(self._lock)
        self._view = View()
        self._static = {}
        self._states = {}
        self._claims, self._dropping = {}, set()
        self._listed_at = dict.fromkeys(VIEW_KINDS, 0.0)
        self._dir_watchers = {
            kind: functools.partial(self._on_dir_event, kind) for kind in VIEW_KINDS
        }
        # Fenced writes (writes) and claims (claims).
        self._fences = {}
        self._progress = {}
        self._progress_dir = {}
        self._last_lease_check = 0.0
        self._contended_until = 0.0
        self._init_waiters()
        # Retention (here).
        self._last_sweep = 0.0
        self._sweeping = False

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``zookeeper://[user:password@]h1:2181,h2:2181/chroot?namespace=..&session_timeout=..``."""
        parts = urlsplit(url)
        shown = redact_url(url)
        netloc = parts.netloc
        digest = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            digest = unquote(userinfo)
        if not netloc:
            raise errors.BadURL(f"board URL {shown!r} names no ZooKeeper host")
        opts = coerce_options(
            {**parse_options(url), **options}, url, floats=("session_timeout", "connect_timeout")
        )
        unknown = sorted(set(opts) - _known_options())
        if unknown:
            raise errors.BadURL(
                f"board URL {shown!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(_known_options() - {'client', 'local_clock'}))}"
            )
        for key in ("session_timeout", "connect_timeout"):
            value = opts.get(key)
            if value is None:
                continue
            number = number_option(value, key, url)
            if not 0 < number <= 3600:
                raise errors.BadURL(
                    f"board URL {shown!r}: option {key!r} must be a number of seconds "
                    f"above 0 and at most 3600, got {value!r}"
                )
            opts[key] = number
        opts.setdefault("digest", digest)
        name = opts.pop("name", None) or opts.get("namespace") or "default"
        return cls(name, hosts=netloc, chroot=parts.path or None, **opts)

    def connect(self) -> Self:
        with self._lock:
            if self._connected:
                return self
            self._closed = False
        try:
            self._open_session()
            self._read(self._load_views)
        except KazooTimeoutError as err:
            self._drop_client()
            raise errors.BoardUnavailable(
                f"{self}: no ZooKeeper session within {self.connect_timeout}s ({self.hosts})"
            ) from err
        except KazooException as err:
            self._drop_client()
            raise self._translate(err, "connect") from err
        except BaseException:
            self._drop_client()
            raise
        with self._lock:
            self._connected = True
        return self

    def close(self) -> None:
        with self._lock:
            if not self._connected:
                return
            self._connected = False
            self._closed = True
            self._changed.notify_all()
        self._pacer.stop()
        client = self._client
        if client is None:
            return
        try:
            if not self._owns_client and client.connected:
                self.stop_waiting()
                for kind, name in list(self._entities):
                    self.unregister_entity(name, kind)
        except (errors.BoardError, KazooException, KazooTimeoutError) as err:
            log.warning("%s: could not unregister entities on close: %s", self, err)
        if self._owns_client:  # closing our session ends its claims
            for job_id in list(self._held):
                self._mark_lost(job_id)
        self._drop_client()

    # -- producers and readers ------------------------------------------------

    def _post(self, new: NewJob) -> Job:
        name, flow, prio = new.name, new.flow, new.priority
        store_json, details_json = new.store_json, new.details_json
        now = time.time()
        static = {
            "name": name,
            "flow": flow,
            "priority": prio.value,
            "max_attempts": new.max_attempts,
            "created_at": now,
        }
        static.update(self._links(new))
        head = json.dumps(static, separators=(",", ":"))[:-1]
        data = f'{head},"store":{store_json},"details":{details_json}}}'.encode()
        if len(data) > self.max_payload:
            field = "store" if len(store_json) >= len(details_json) else "details"
            raise errors.InvalidJob(
                f"job {name!r}: field {field!r} makes the job {len(data)} bytes encoded, "
                f"over the limit of {self.max_payload}",
                field=field,
                job=name,
            )
        static["store"] = json.loads(store_json)
        static["details"] = json.loads(details_json)
        create = ("create", self._path("jobs", job_prefix(prio.rank, flow, new.due(now))), data)
        if new.key is not None:  # one transaction with the key's node; safe to resend
            job_id, existing = self._post_keyed(new.key, [(*create, False, True)])
            if existing is not None:
                return existing
        else:
            try:
                path = self._transact([(*create, False, True), *self._counted("posted")])[0]
            except Refused as refused:
                raise errors.BoardError(f"{self}: post {name!r} refused: {refused}") from None
            except (KazooException, KazooTimeoutError) as err:
                # A sequential create is not idempotent: never resend it blindly.
                raise self._translate(err, f"post {name!r} (outcome unknown)") from err
            job_id = path.rpartition("/")[2]
        with self._lock:
            self._static[job_id] = static
        self._local("jobs", job_id, True)
        self._emit(new.event(job_id, due_of(job_id)))
        self._maybe_sweep()
        return active_job(job_id, static, None, None, None, False)

    def get(self, job: JobRef) -> Job:
        job_id = self._require_id(job)
        return self._job(self._read(lambda: self._snapshot(job_id), f"get {job_id}"))

    def _list_jobs(self, wanted: frozenset[JobState], flow: str | None, fresh: bool) -> list[Job]:
        jobs: list[Job] = []
        if wanted & ACTIVE_STATES:
            if fresh:
                self._refresh_views()
            with self._lock:
                ids = self._view.active(flow)
            jobs.extend(
                j
                for j in self._read(lambda: self._active_jobs(ids, fresh))
                if j.state in wanted
            )
        if wanted & FINISHED_STATES:
            jobs.extend(
                j
                for j in self._read(self._finished_jobs, "list finished jobs")
                if j.state in wanted and (flow is None or j.flow == flow)
            )
        jobs.sort(key=lambda j: (j.priority.rank, j.seq))
        return jobs

    def find_owner(self, job: JobRef) -> str | None:
        job_id = self._require_id(job)
        with self._lock:
            active = job_id in self._view.members["jobs"]
            claimed = job_id in self._view.members["claims"]
            cached = self._claims.get(job_id)
            fence = self._fences.get(job_id)
        if not active:
            return self.get(job_id).owner
        if not claimed:
            return None
        if fence is not None and fence.lease is None and job_id not in self._lost:
            return fence.owner
        if cached is None or cached[0].get("lease") is not None:
            found = self._read(lambda: self._gather([("get", self._path("claims", job_id))])[0])
            if found is None:
                return None
            cached = (read_claim(found[0], job_id), found[1])
            with self._lock:
                self._claims[job_id] = cached
        return cached[0].get("owner") if is_live(*cached, self._time.now()) else None

    # -- operators ------------------------------------------------------------

    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        count = self._read(lambda: self._sweep(wanted, older_than), "purge")
        if count:
            self._emit(BoardEvent("purged", None, {"count": count}))
        return count

    def _maybe_sweep(self) -> None:
        """Apply retention now and then, in the background (finished jobs go lazily)."""
        now = time.monotonic()
        interval = min(self.RETENTION_SWEEP_INTERVAL, max(self.retention, 1.0))
        with self._lock:
            if self._sweeping or now - self._last_sweep < interval:
                return
            self._sweeping = True
            self._last_sweep = now

        def sweep() -> None:
            try:
                self._read(lambda: self._sweep(frozenset(), math.inf), "retention")
            except errors.BoardError as err:
                log.warning("%s: retention sweep failed: %s", self, err)
            finally:
                self._sweeping = False

        self.client.handler.spawn(sweep)

    def _sweep(self, wanted: frozenset[JobState], older_than: float) -> int:
        """Delete finished jobs past retention, and those in ``wanted`` older than
        ``older_than`` (counted); also drop cancel flags of jobs that are gone."""
        names, jobs, cancels = self._gather(
            [
                ("get_children", self._path("done")),
                ("get_children", self._path("jobs")),
                ("get_children", self._path("cancel")),
            ]
        )
        names = [n for n in names or [] if parse_id(n)]
        stats = self._gather([("exists", self._path("done", n)) for n in names])
        now = time.time()
        expired, candidates = [], []
        for name, stat in zip(names, stats, strict=True):
            if stat is None:
                continue
            age = now - stat.ctime / 1000.0
            if age >= self.retention:
                expired.append(name)
            elif wanted and age >= older_than:
                candidates.append(name)
        if candidates and wanted != FINISHED_STATES:
            found = self._gather([("get", self._path("done", n)) for n in candidates])
            candidates = [
                n
                for n, f in zip(candidates, found, strict=True)
                if f and read_done(f[0], n).state in wanted
            ]
        doomed = expired + candidates
        wanted_names = set(candidates)
        folders = self._gather([("get_children", self._path("progress", n)) for n in doomed])
        keys = self._key_deletes(doomed)  # a dedupe key goes with its job
        pending = []
        for name, atoms in zip(doomed, folders, strict=True):
            tx = self.client.transaction()
            if name in keys:
                tx.delete(keys[name][0], version=keys[name][1])
            for atom in atoms or []:
                tx.delete(self._path("progress", name, atom))
            if atoms is not None:
                tx.delete(self._path("progress", name))
            tx.delete(self._path("done", name))
            if name in wanted_names:
                for op, path, *_ in self._counted("purged"):
                    if op == "create":
                        tx.create(path, b"", acl=self._acl)
                    else:
                        tx.delete(path)
            pending.append((name, tx.commit_async()))
        deleted = set()
        for name, result in pending:
            outcome = result.get(timeout=self.session_timeout)
            if not any(isinstance(r, Exception) for r in outcome):
                deleted.add(name)
        orphans = set(cancels or []) - set(jobs or [])
        for result in [self.client.delete_async(self._path("cancel", o)) for o in orphans]:
            try:
                result.get(timeout=self.session_timeout)
            except NoNodeError:
                pass
        return len(deleted & set(candidates))
