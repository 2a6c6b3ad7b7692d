"""ZooKeeper job board (``zookeeper://h1:2181,h2:2181/chroot?namespace=...``).

Claims are **ephemeral** znodes owned by the claimant's ZooKeeper session: a
conductor that dies or loses its session loses its claims by ZooKeeper's own
guarantee, within the session timeout. Node layout under ``<chroot>/<namespace>``::

    jobs/p<rank>+<flow>+<seq>    persistent sequential: the job as posted, never rewritten;
                                 its name is its id and gives priority, flow and post order
    state/<id>                   persistent: token, attempts, last owner and error; created
                                 by the first claim (absent means token 0, attempts 0)
    claims/<id>                  EPHEMERAL: {owner, token, lease}; exists while claimed
    cancel/<id>                  persistent flag: a cancel was requested while claimed
    progress/<id>/a<atom>        persistent: one JSON progress record per atom
    done/<id>                    persistent: the finished job (moved out of jobs/ atomically)
    counters/<board-instance>    persistent: one board instance's event counts (summed on read)
    entities/k<kind>/n<name>     EPHEMERAL: a registered participant's metadata

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
"""

from __future__ import annotations

import functools
import heapq
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Self, TypeVar
from urllib.parse import quote, unquote, urlsplit

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, ZnodeStat
from kazoo.retry import KazooRetry, RetryFailedError
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Permissions, make_digest_acl

from jobboard import errors
from jobboard.base import (
    ACTIVE_STATES,
    FINISHED_STATES,
    BoardEvent,
    Claim,
    ClaimStatus,
    Entity,
    Job,
    JobBoard,
    JobPriority,
    JobRef,
    JobState,
    coerce_options,
)

__all__ = ["ZookeeperBoard"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ID_RE = re.compile(r"^p([0-4])\+([A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127})\+(\d{10,})$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_PRIORITIES = tuple(JobPriority)
_TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError, KazooTimeoutError)
_CASCADE = (RolledBackError, RuntimeInconsistency)
_FINISH_EVENTS = {
    JobState.COMPLETE: "consumed",
    JobState.FAILED: "failed",
    JobState.TRASHED: "trashed",
    JobState.CANCELLED: "cancelled",
}
_VIEW_KINDS = ("jobs", "claims", "cancel")
_FOLDERS = ("jobs", "state", "claims", "cancel", "progress", "done", "counters", "entities")


def _parse_id(job_id: str) -> tuple[int, str, int] | None:
    """(rank, flow, seq) from a job id, or None when it is not one of ours."""
    match = _ID_RE.match(job_id)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(3))


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _load(raw: bytes | None, what: str) -> dict[str, Any] | None:
    """Decode a stored JSON object; ``InvalidJob`` names the node when it is corrupt."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise errors.InvalidJob(f"stored record {what!r} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise errors.InvalidJob(f"stored record {what!r} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything stored about one job, read in one pipelined round trip."""

    job_id: str
    static: dict[str, Any] | None
    state: dict[str, Any] | None
    state_version: int | None
    claim: dict[str, Any] | None
    claim_stat: ZnodeStat | None
    cancel: bool
    done: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Fence:
    """What a fenced write checks: the versions our claim left on the state and claim nodes."""

    owner: str | None
    token: int
    state_version: int | None
    claim_version: int | None
    static: dict[str, Any]
    state: dict[str, Any]
    lease: float | None = None


class _Refused(Exception):
    """A multi-op transaction failed; ``index`` names the failing operation."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"operation {index} failed: {error!r}")
        self.index = index
        self.error = error


class _View:
    """The local picture of active jobs, claims and cancel flags (caller holds the lock).

    Listings come from children watches; our own writes are applied at once as
    overrides, which a listing drops only when it was requested after the
    write (ZooKeeper answers one session's requests in order), so a listing
    already in flight never undoes a change we know about.
    """

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {kind: set() for kind in _VIEW_KINDS}
        self.gen = dict.fromkeys(_VIEW_KINDS, 0)
        self.pzxid = dict.fromkeys(_VIEW_KINDS, -1)
        self.overrides: dict[str, dict[str, tuple[int, bool]]] = {k: {} for k in _VIEW_KINDS}
        self.heaps: dict[str, list[tuple[int, int, str]]] = {}
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
        members = {c for c in children if _parse_id(c) is not None}
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
        parsed = _parse_id(job_id)
        if parsed is not None:
            rank, flow, seq = parsed
            heapq.heappush(self.heaps.setdefault(flow, []), (rank, seq, job_id))

    def waiting(self, job_id: str) -> bool:
        return (
            job_id in self.members["jobs"]
            and job_id not in self.members["claims"]
            and job_id not in self.unconfirmed
        )

    def best(self, flows: Collection[str] | None, pop: bool) -> str | None:
        """The best waiting job of ``flows`` (dropping stale heap entries); pop it if asked."""
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
        picked = []
        while len(picked) < k and (job_id := self.best(flows, pop=True)) is not None:
            picked.append(job_id)
        if not picked:
            return None
        rank = _parse_id(picked[0])[0]  # type: ignore[index]
        choice = random.choice([j for j in picked if _parse_id(j)[0] == rank])  # type: ignore[index]
        for job_id in picked:
            if job_id != choice:
                self.push(job_id)
        return choice

    def active(self, flow: str | None) -> list[str]:
        """Active job ids in claim order."""
        ids = []
        for job_id in self.members["jobs"]:
            parsed = _parse_id(job_id)
            if parsed is not None and (flow is None or parsed[1] == flow):
                ids.append((parsed[0], parsed[2], job_id))
        return [job_id for _, _, job_id in sorted(ids)]


class ZookeeperBoard(JobBoard):
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
    #: Fraction of the session timeout after which a suspended connection means
    #: our claims are lost: kazoo suspends after 2/3 of the timeout of silence,
    #: so the server may expire the session from about 1/3 later.
    SUSPENDED_LOSS_FRACTION = 1 / 3
    #: Minimum seconds between two retention sweeps started by ``post``.
    RETENTION_SWEEP_INTERVAL = 60.0
    #: Minimum seconds between two looks for lapsed leases by an idle ``claim_next``.
    LEASE_CHECK_INTERVAL = 0.5
    #: Pacing of the listings of one watched folder, in seconds per child listed,
    #: up to ``LISTING_INTERVAL_MAX``: a change after a quiet spell is listed at
    #: once, a burst at a pace that grows with the folder (each listing carries
    #: every child, so one listing per change would cost O(backlog^2)).
    LISTING_COST = 5e-5
    LISTING_INTERVAL_MAX = 0.25
    #: After losing a race for a job, ``claim_next`` picks at random among the
    #: ``CLAIM_SPREAD`` best jobs of the best priority for ``CONTENTION_MEMORY``
    #: seconds (FIFO within a priority then holds up to that many places).
    CLAIM_SPREAD = 4
    CONTENTION_MEMORY = 1.0
    #: Seconds between writes of this instance's event counters.
    COUNTER_FLUSH_INTERVAL = 1.0

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
        if not _NAMESPACE_RE.match(self.namespace):
            raise errors.BadURL(
                f"board {name!r}: namespace must match {_NAMESPACE_RE.pattern}, "
                f"got {self.namespace!r}"
            )
        chroot = (chroot or self.DEFAULT_CHROOT).rstrip("/")
        if not chroot.startswith("/") or "//" in chroot:
            raise errors.BadURL(f"board {name!r}: chroot must be an absolute path, got {chroot!r}")
        if digest is not None and ":" not in digest:
            raise errors.BadURL(f"board {name!r}: option 'digest' must be user:password")
        self.hosts = hosts
        self.root = f"{chroot}/{self.namespace}"
        self.session_timeout = float(session_timeout or self.DEFAULT_SESSION_TIMEOUT)
        self.connect_timeout = float(connect_timeout or self.CONNECT_TIMEOUT)
        self._digest = digest
        self._acl: list[ACL] | None = None
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
        self._changed = threading.Condition(self._lock)
        self._view = _View()
        self._static: dict[str, dict[str, Any]] = {}
        self._states: dict[str, tuple[dict[str, Any] | None, int | None]] = {}
        self._claims: dict[str, tuple[dict[str, Any], ZnodeStat]] = {}
        self._fences: dict[str, _Fence] = {}
        self._progress: dict[str, set[str] | None] = {}  # held job -> atoms known to exist
        self._progress_dir: dict[str, bool] = {}
        self._entities: dict[tuple[str, str], bytes] = {}
        self._counts: dict[str, int] = {}
        self._counts_dirty = False
        self._flush_lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._listed_at = dict.fromkeys(_VIEW_KINDS, 0.0)
        self._dir_watchers = {
            kind: functools.partial(self._on_dir_event, kind) for kind in _VIEW_KINDS
        }
        self._suspended_at: float | None = None
        self._session_id: int | None = None
        self._connected = False
        self._closed = False
        self._last_sweep = 0.0
        self._sweeping = False
        self._last_lease_check = 0.0
        self._contended_until = 0.0
        self._retry = KazooRetry(
            max_tries=-1,
            delay=0.05,
            backoff=2,
            max_jitter=0.5,
            max_delay=1.0,
            deadline=self.RETRY_DEADLINE,
            ignore_expire=True,
        )

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``zookeeper://[user:password@]h1:2181,h2:2181/chroot?namespace=..&session_timeout=..``."""
        from jobboard import parse_options

        parts = urlsplit(url)
        netloc = parts.netloc
        digest = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            digest = unquote(userinfo)
        if not netloc:
            raise errors.BadURL(f"board URL {url!r} names no ZooKeeper host")
        opts = coerce_options({**parse_options(url), **options}, url)
        for key in ("session_timeout", "connect_timeout"):
            if isinstance(opts.get(key), str):
                try:
                    opts[key] = float(opts[key])
                except ValueError as err:
                    raise errors.BadURL(
                        f"board URL {url!r}: option {key!r} must be a number, got {opts[key]!r}"
                    ) from err
        opts.setdefault("digest", digest)
        name = opts.pop("name", None) or opts.get("namespace") or "default"
        return cls(name, hosts=netloc, chroot=parts.path or None, **opts)

    def connect(self) -> Self:
        with self._lock:
            if self._connected:
                return self
            self._closed = False
        try:
            if self._client is None:
                self._client = KazooClient(
                    hosts=self.hosts,
                    timeout=self.session_timeout,
                    connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=1.0),
                    auth_data=[("digest", self._digest)] if self._digest else None,
                )
                self._owns_client = True
            client = self._client
            if self._owns_client and not client.connected:
                client.start(timeout=self.connect_timeout)
            elif not client.connected:
                raise errors.BoardUnavailable(f"{self}: the given kazoo client is not connected")
            elif self._digest and not self._owns_client:
                client.add_auth("digest", self._digest)
            self._session_id = client.client_id[0] if client.client_id else None
            client.add_listener(self._on_state)
            self._read(self._ensure_layout)
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

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.remove_listener(self._on_state)
            if self._owns_client:
                self._client.stop()
                self._client.close()
                self._client = None

    def close(self) -> None:
        with self._lock:
            if not self._connected:
                return
            self._connected = False
            self._closed = True
            self._changed.notify_all()
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()
        client = self._client
        if client is None:
            return
        try:
            if not client.connected:
                raise errors.BoardUnavailable("not connected")
            self._fold_counters()
            if not self._owns_client:
                for kind, name in list(self._entities):
                    self.unregister_entity(name, kind)
        except (errors.BoardError, KazooException, KazooTimeoutError) as err:
            log.warning("%s: could not save counters or entities on close: %s", self, err)
        if self._owns_client:  # closing our session ends its claims
            for job_id in list(self._held):
                self._mark_lost(job_id)
        self._drop_client()

    @property
    def connected(self) -> bool:
        return self._connected and self._client is not None and self._client.connected

    @property
    def client(self) -> KazooClient:
        """The kazoo client in use (for tests and tools; do not stop a board's own client)."""
        if self._client is None:
            raise errors.BoardUnavailable(f"{self} is not connected")
        return self._client

    def __repr__(self) -> str:
        return f"<ZookeeperBoard {self.hosts}{self.root}>"

    def _connection_uncertain(self) -> bool:
        client = self._client
        return client is None or client.state != KazooState.CONNECTED

    def claim_status(self, claim: Claim | str) -> ClaimStatus:
        """As :meth:`JobBoard.claim_status`; a connection suspended for long means lost."""
        status = super().claim_status(claim)
        since = self._suspended_at
        if (
            status is ClaimStatus.UNCERTAIN
            and since is not None
            and time.monotonic() - since >= self.session_timeout * self.SUSPENDED_LOSS_FRACTION
        ):
            self._mark_lost(claim if isinstance(claim, str) else claim.job_id)
            return ClaimStatus.LOST
        return status

    # -- paths, reads, writes, errors ----------------------------------------

    def _path(self, kind: str, *names: str) -> str:
        return "/".join((self.root, kind, *names))

    def _create_kwargs(self) -> dict[str, Any]:
        return {"acl": self._acl} if self._acl else {}

    def _ensure_layout(self) -> None:
        client = self.client
        self._call("ensure_path", self.root, acl=self._acl)
        pending = [
            client.create_async(self._path(kind), b"", **self._create_kwargs()) for kind in _FOLDERS
        ]
        for result in pending:
            try:
                result.get(timeout=self.session_timeout)
            except NodeExistsError:
                pass
        try:
            self._call(
                "create", self._path("counters", self._instance), b"{}", **self._create_kwargs()
            )
        except NodeExistsError:
            pass

    def _translate(self, err: BaseException, what: str) -> errors.BoardError:
        if isinstance(err, NoAuthError):
            return errors.BoardError(f"{self}: {what}: permission denied by the node's ACL")
        if isinstance(err, (RetryFailedError, ConnectionClosedError, *_TRANSIENT)):
            return errors.BoardUnavailable(f"{self}: {what}: ZooKeeper unavailable ({err!r})")
        return errors.BoardError(f"{self}: {what}: {err!r}")

    def _retrying(self, what: str, fn: Callable[[bool], T]) -> T:
        """Run ``fn(uncertain)`` retrying connection trouble with jittered backoff and a
        deadline. ``uncertain`` is True after a failed attempt whose write may have
        been applied, so that ``fn`` can recognise its own earlier success."""
        flag = {"uncertain": False}

        def attempt() -> T:
            try:
                return fn(flag["uncertain"])
            except _TRANSIENT as err:
                flag["uncertain"] = True
                if isinstance(err, KazooTimeoutError):
                    raise OperationTimeoutError() from err
                raise

        if self._client is None or self._closed:
            raise errors.BoardUnavailable(f"{self} is not connected")
        try:
            return self._retry.copy()(attempt)
        except errors.BoardError:
            raise
        except KazooException as err:
            raise self._translate(err, what) from err

    def _read(self, fn: Callable[[], T], what: str = "read") -> T:
        """An idempotent read (or idempotent write), retried across connection trouble."""
        return self._retrying(what, lambda _uncertain: fn())

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One request, awaited at most a session timeout (kazoo's own calls wait forever
        while the connection is down)."""
        result = getattr(self.client, f"{method}_async")(*args, **kwargs)
        return result.get(timeout=self.session_timeout)

    def _gather(self, calls: list[tuple[str, str]]) -> list[Any]:
        """Send reads back to back (one round trip for all); None for a missing node.

        Each call is (op, path) with op ``get``, ``exists``, ``get_children`` or
        ``listing`` (children with the parent's stat).
        """
        client = self.client
        pending = [
            client.get_children_async(path, include_data=True)
            if op == "listing"
            else getattr(client, f"{op}_async")(path)
            for op, path in calls
        ]
        out = []
        for result in pending:
            try:
                out.append(result.get(timeout=self.session_timeout))
            except NoNodeError:
                out.append(None)
        return out

    def _transact(
        self, ops: list[tuple[Any, ...]], after: Callable[[], None] | None = None
    ) -> list[Any]:
        """Commit one multi-op transaction; raise ``_Refused`` naming the failed op.

        ``after`` may send more requests behind the transaction before its answer
        is awaited (same round trip; ZooKeeper answers them in order)."""
        tx = self.client.transaction()
        size = 0
        for op, path, *args in ops:
            if op == "create":
                value, ephemeral = args
                size += len(value)
                tx.create(path, value, acl=self._acl, ephemeral=ephemeral)
            elif op == "set":
                size += len(args[0])
                tx.set_data(path, args[0], version=args[1])
            elif op == "delete":
                tx.delete(path, version=args[0])
            else:
                tx.check(path, args[0])
        if size > self.REQUEST_LIMIT:
            raise errors.InvalidJob(
                f"{self}: the request would be {size} bytes, over ZooKeeper's limit "
                f"({self.REQUEST_LIMIT}); lower max_payload",
                field="result",
            )
        pending = tx.commit_async()
        if after is not None:
            after()
        results = pending.get(timeout=self.session_timeout)
        for index, result in enumerate(results):
            if isinstance(result, Exception) and not isinstance(result, _CASCADE):
                raise _Refused(index, result)
        return results

    # -- the local view -------------------------------------------------------

    def _load_views(self) -> None:
        """List jobs, claims and cancel flags with watches (at connect and reconnect)."""
        pending = [(kind, self._watch_dir(kind)) for kind in _VIEW_KINDS]
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
            listings = self._gather([("listing", self._path(kind)) for kind in _VIEW_KINDS])
            for kind, listing in zip(_VIEW_KINDS, listings, strict=True):
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
                    events.append(BoardEvent("posted", job_id, {"flow": _parse_id(job_id)[1]}))
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
            data = _load(result.get_nowait()[0], where)
        except (KazooException, KazooTimeoutError, errors.BoardError):
            return
        if data is None:
            return
        if where == "claims":
            event = BoardEvent(
                "claimed", job_id, {"token": data.get("token"), "owner": data.get("owner")}
            )
        elif where == "done":
            kind = _FINISH_EVENTS.get(JobState(data.get("state", "complete")), "consumed")
            event = BoardEvent(
                kind,
                job_id,
                {
                    "token": data.get("token"),
                    "owner": data.get("finished_by"),
                    "forced": data.get("forced", False),
                    "flow": data.get("flow"),
                },
            )
        elif data.get("owner") is None:
            event = BoardEvent(
                "abandoned",
                job_id,
                {
                    "token": data.get("token"),
                    "owner": data.get("released_by"),
                    "forced": data.get("forced", False),
                },
            )
        else:
            event = BoardEvent(
                "expired", job_id, {"token": data.get("token"), "owner": data.get("owner")}
            )
        self._emit(event)

    def _local(self, kind: str, job_id: str, present: bool) -> None:
        with self._lock:
            self._view.unconfirmed.discard(job_id)
            changed = self._view.local(kind, job_id, present)
            if changed and (kind == "jobs" and present or kind == "claims" and not present):
                self._view.push(job_id)
            self._changed.notify_all()

    def _forget_caches(self, job_id: str) -> None:
        self._static.pop(job_id, None)
        self._states.pop(job_id, None)
        self._claims.pop(job_id, None)

    def _on_state(self, state: str) -> None:
        """kazoo connection state listener (runs on kazoo's connection thread)."""
        if state == KazooState.SUSPENDED:
            self._suspended_at = time.monotonic()
            log.warning("%s: connection suspended; claims are uncertain", self)
        elif state == KazooState.LOST:
            self._suspended_at = None
            with self._lock:
                held = list(self._held)
            for job_id in held:
                self._mark_lost(job_id)
            if held:
                log.warning("%s: session lost; %d claims are gone", self, len(held))
        else:
            self._suspended_at = None
            if self._connected and not self._closed:
                self.client.handler.spawn(self._resync)

    def _resync(self) -> None:
        """After a reconnect: list again with watches, re-check our claims, re-register."""
        try:
            client = self.client
            new_session = client.client_id[0] if client.client_id else None
            if new_session != self._session_id:
                self._session_id = new_session
                for (kind, name), data in list(self._entities.items()):
                    self._put_entity(kind, name, data)
            self._read(self._load_views, "resync")
            for job_id in list(self._held):
                self._verify_claim(job_id)
        except (errors.BoardError, KazooException, KazooTimeoutError) as err:
            log.warning("%s: resync after reconnect failed: %s", self, err)

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
            claim = _load(data, "claim")
        except errors.InvalidJob:
            claim = None
        if claim is None or claim.get("token") != token or claim.get("owner") != held.owner:
            log.info("%s: claim on %s (token %s) is gone", self, job_id, token)
            self._mark_lost(job_id)

    # -- reading jobs ---------------------------------------------------------

    def _require_id(self, job: JobRef) -> str:
        job_id = self._job_id(job)
        if _parse_id(job_id) is None:
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
        return job_id

    def _snapshot(self, job_id: str) -> _Snapshot:
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
            return _Snapshot(job_id, None, None, None, None, None, False, _load(done[0], job_id))
        if jobs is None:
            return _Snapshot(job_id, None, None, None, None, None, False, None)
        if static is None:
            static = _load(jobs[0], job_id)
            with self._lock:
                if job_id in self._view.members["jobs"]:
                    self._static[job_id] = static
        return _Snapshot(
            job_id,
            static,
            _load(state[0], job_id) if state else None,
            state[1].version if state else None,
            _load(claim[0], job_id) if claim else None,
            claim[1] if claim else None,
            cancel is not None,
            None,
        )

    @staticmethod
    def _expiry(claim: Mapping[str, Any] | None, stat: ZnodeStat | None) -> float | None:
        """Board time when a leased claim runs out (None for session-bound claims)."""
        if claim is None or stat is None or claim.get("lease") is None:
            return None
        return stat.mtime / 1000.0 + float(claim["lease"])

    def _live(self, claim: Mapping[str, Any] | None, stat: ZnodeStat | None) -> bool:
        if claim is None:
            return False
        expiry = self._expiry(claim, stat)
        return expiry is None or expiry > time.time()

    def _job(self, snap: _Snapshot) -> Job:
        """The Job a snapshot describes; ``JobNotFound`` when there is none."""
        if snap.done is not None:
            return Job.from_dict(snap.done)
        if snap.static is None:
            raise errors.JobNotFound(f"no job {snap.job_id!r} on board {self.name!r}")
        return self._active_job(
            snap.job_id, snap.static, snap.state, snap.claim, snap.claim_stat, snap.cancel
        )

    def _active_job(
        self,
        job_id: str,
        static: Mapping[str, Any],
        state: Mapping[str, Any] | None,
        claim: Mapping[str, Any] | None,
        claim_stat: ZnodeStat | None,
        cancel: bool,
    ) -> Job:
        _, _, seq = _parse_id(job_id) or (0, "", 0)
        state = state or {}
        live = self._live(claim, claim_stat)
        try:
            return Job(
                id=job_id,
                name=static["name"],
                flow=static["flow"],
                store=static["store"],
                priority=JobPriority(static["priority"]),
                state=JobState.CLAIMED if live else JobState.WAITING,
                created_at=static["created_at"],
                updated_at=state.get("updated_at", static["created_at"]),
                seq=seq,
                attempts=state.get("attempts", 0),
                max_attempts=static["max_attempts"],
                owner=claim["owner"] if live and claim else None,
                token=state.get("token", 0),
                claimed_at=state.get("claimed_at") if live else None,
                lease_expires_at=self._expiry(claim, claim_stat) if live else None,
                cancel_requested=cancel,
                last_error=state.get("last_error"),
                details=static.get("details", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise errors.InvalidJob(
                f"job {job_id!r}: the stored record is corrupt ({err!r}); trash it with force",
                job=job_id,
            ) from err

    # -- producers ------------------------------------------------------------

    def post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        max_attempts: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Job:
        prio, attempts, store_json, details_json = self._validate_post(
            name, flow, store, priority, max_attempts, details
        )
        now = time.time()
        static = {
            "name": name,
            "flow": flow,
            "priority": prio.value,
            "max_attempts": attempts,
            "created_at": now,
        }
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
        try:
            path = self._call(
                "create",
                self._path("jobs", f"p{prio.rank}+{flow}+"),
                data,
                sequence=True,
                **self._create_kwargs(),
            )
        except (KazooException, KazooTimeoutError) as err:
            # A sequential create is not idempotent: never resend it blindly.
            raise self._translate(err, f"post {name!r} (outcome unknown)") from err
        job_id = path.rpartition("/")[2]
        with self._lock:
            self._static[job_id] = static
        self._local("jobs", job_id, True)
        self._count("posted")
        self._emit(BoardEvent("posted", job_id, {"flow": flow, "name": name}))
        self._maybe_sweep()
        return self._active_job(job_id, static, None, None, None, False)

    def get(self, job: JobRef) -> Job:
        job_id = self._require_id(job)
        return self._job(self._read(lambda: self._snapshot(job_id), f"get {job_id}"))

    def iterjobs(
        self,
        only_unclaimed: bool = False,
        ensure_fresh: bool = False,
        *,
        states: Collection[JobState | str] | None = None,
        flow: str | None = None,
    ) -> Iterator[Job]:
        wanted = self._normalise_states(states, only_unclaimed)
        jobs: list[Job] = []
        if wanted & ACTIVE_STATES:
            if ensure_fresh:
                self._refresh_views()
            with self._lock:
                ids = self._view.active(flow)
            jobs.extend(
                j
                for j in self._read(lambda: self._active_jobs(ids, ensure_fresh))
                if j.state in wanted
            )
        if wanted & FINISHED_STATES:
            jobs.extend(
                j
                for j in self._read(self._finished_jobs, "list finished jobs")
                if j.state in wanted and (flow is None or j.flow == flow)
            )
        jobs.sort(key=lambda j: (j.priority.rank, j.seq))
        return iter(jobs)

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
                    self._static[job_id] = _load(found[0], job_id)
            for job_id in need_state:
                found = next(results)
                self._states[job_id] = (
                    (_load(found[0], job_id), found[1].version) if found else (None, None)
                )
            fetched_claims = {}
            for job_id in need_claim:
                found = next(results)
                if found is not None:
                    fetched_claims[job_id] = (_load(found[0], job_id), found[1])
                    self._claims[job_id] = fetched_claims[job_id]
            for job_id in ids:
                static = self._static.get(job_id)
                if static is None:
                    continue  # finished meanwhile
                claim, stat = (None, None)
                if job_id in claimed:
                    claim, stat = fetched_claims.get(job_id) or self._claims.get(
                        job_id, (None, None)
                    )
                state = self._states.get(job_id, (None, None))[0]
                out.append(self._active_job(job_id, static, state, claim, stat, job_id in cancels))
        return out

    def _finished_jobs(self) -> list[Job]:
        names = [
            n for n in self._gather([("get_children", self._path("done"))])[0] or [] if _parse_id(n)
        ]
        found = self._gather([("get", self._path("done", n)) for n in names])
        return [Job.from_dict(_load(f[0], n)) for n, f in zip(names, found, strict=True) if f]

    @property
    def job_count(self) -> int:
        """Number of unfinished jobs, from the local view."""
        with self._lock:
            return len(self._view.members["jobs"])

    def cancel(self, job: JobRef) -> Job:
        job_id = self._require_id(job)

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                snap = self._snapshot(job_id)
                current = self._job(snap)
                if current.state.finished:
                    if uncertain and current.state is JobState.CANCELLED:
                        return current
                    raise errors.InvalidState(
                        f"job {job_id!r} is already {current.state.value}; nothing to cancel"
                    )
                if current.state is JobState.CLAIMED:
                    if snap.cancel:
                        return current
                    assert snap.claim_stat is not None
                    try:
                        self._transact(
                            [
                                ("check", self._path("claims", job_id), snap.claim_stat.version),
                                (
                                    "create",
                                    self._path("cancel", job_id),
                                    _dump({"at": time.time()}),
                                    False,
                                ),
                            ]
                        )
                    except _Refused:
                        continue
                    self._local("cancel", job_id, True)
                    if job_id in self._held:
                        self._mark_cancel(job_id)
                    self._emit(BoardEvent("cancel_requested", job_id, {"token": current.token}))
                    return replace(current, cancel_requested=True)
                fence = self._fence_of(snap)
                done = self._finish_record(
                    current,
                    JobState.CANCELLED,
                    "cancel",
                    False,
                    error="cancelled before it started",
                )
                done_job = self._commit_finish(job_id, fence, done, snap.cancel)
                if done_job is not None:
                    self._emit(BoardEvent("cancelled", job_id, {"token": current.token}))
                    return done_job
            raise errors.BoardUnavailable(f"job {job_id!r}: cancel kept racing other writers")

        return self._retrying(f"cancel {job_id}", attempt)

    # -- conductors -----------------------------------------------------------

    def _claim_lease(self, lease: float | None) -> float | None:
        """The lease of a new claim: None (session-bound) unless one was asked for."""
        if lease is not None:
            return self._lease_for(lease)
        return self.lease if self._explicit_lease else None

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._require_id(job)
        self._check_owner_args(job_id, who, 0, False)
        length = self._claim_lease(lease)
        claim = self._retrying(f"claim {job_id}", lambda u: self._claim_id(job_id, who, length, u))
        if claim is None:
            raise errors.UnclaimableJob(f"job {job_id!r} was trashed as a poison job")
        return claim

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        self._check_owner_args("?", who, 0, False)
        length = self._claim_lease(lease)
        flows = None if flows is None else frozenset(flows)
        tried: set[str] = set()
        while True:
            with self._lock:
                if time.monotonic() < self._contended_until:
                    job_id = self._view.spread(flows, self.CLAIM_SPREAD)
                else:
                    job_id = self._view.best(flows, pop=True)
            probe = job_id is None  # a lapsed lease: read the claim it replaces
            if job_id is None:
                job_id = self._lapsed_lease(flows, tried)
                if job_id is None:
                    return None
            if job_id in tried:
                continue
            tried.add(job_id)
            try:
                claim = self._retrying(
                    f"claim {job_id}",
                    lambda u, j=job_id, p=probe: self._claim_id(j, who, length, u, p),
                )
            except (errors.UnclaimableJob, errors.JobNotFound):
                continue
            except BaseException:
                with self._lock:
                    self._view.push(job_id)
                raise
            if claim is not None:
                return claim

    def _lapsed_lease(self, flows: frozenset[str] | None, tried: set[str]) -> str | None:
        """A claimed job whose lease ran out (leased claims only), looked for at most
        every ``LEASE_CHECK_INTERVAL`` by an idle ``claim_next``."""
        now = time.monotonic()
        if now - self._last_lease_check < self.LEASE_CHECK_INTERVAL:
            return None
        self._last_lease_check = now
        with self._lock:
            candidates = [
                i
                for i in self._view.members["claims"] & self._view.members["jobs"]
                if i not in tried
                and i not in self._held
                and (flows is None or _parse_id(i)[1] in flows)
                and (i not in self._claims or self._claims[i][0].get("lease") is not None)
            ]
        if not candidates:
            return None
        found = self._read(
            lambda: self._gather([("get", self._path("claims", i)) for i in candidates])
        )
        lapsed = []
        with self._lock:
            for job_id, item in zip(candidates, found, strict=True):
                if item is None:
                    continue
                claim = _load(item[0], job_id)
                self._claims[job_id] = (claim, item[1])
                if not self._live(claim, item[1]):
                    lapsed.append((_parse_id(job_id)[0], _parse_id(job_id)[2], job_id))
        return min(lapsed)[2] if lapsed else None

    def _claim_id(
        self, job_id: str, who: str, lease: float | None, uncertain: bool, probe: bool = True
    ) -> Claim | None:
        """Claim one job: one transaction creating our claim node and writing the state
        node; the job's static part is read in the same round trip when not cached.
        Returns None when the job was trashed as poison instead."""
        started = self._local_clock()
        with self._lock:
            static = self._static.get(job_id)
            cached = self._states.get(job_id)
        state, state_version = cached if cached is not None else (None, None)
        lapsed_version: int | None = None
        for _ in range(self.MAX_ROUNDS):
            attempts = (state or {}).get("attempts", 0)
            if attempts > 0:
                if static is None:
                    found = self._gather([("get", self._path("jobs", job_id))])[0]
                    if found is None:
                        self._job_gone(job_id)
                    static = _load(found[0], job_id)
                if attempts >= static.get("max_attempts", self.max_attempts):
                    self._trash_poison(job_id, static, state, state_version, lapsed_version)
                    return None
            now = time.time()
            token = (state or {}).get("token", 0) + 1
            new_state = {
                **(state or {}),
                "token": token,
                "attempts": attempts + 1,
                "owner": who,
                "claimed_at": now,
                "updated_at": now,
                "released_by": None,
                "forced": False,
            }
            claim_data = {"owner": who, "token": token, "lease": lease, "claimed_at": now}
            ops: list[tuple[Any, ...]] = [("check", self._path("jobs", job_id), -1)]
            if lapsed_version is not None:
                ops.append(("delete", self._path("claims", job_id), lapsed_version))
            ops.append(("create", self._path("claims", job_id), _dump(claim_data), True))
            if state_version is None:
                ops.append(("create", self._path("state", job_id), _dump(new_state), False))
            else:
                ops.append(("set", self._path("state", job_id), _dump(new_state), state_version))
            static_read = (
                None if static is not None else self.client.get_async(self._path("jobs", job_id))
            )
            verify: list[Any] = []
            try:
                results = self._transact(ops, functools.partial(self._watch_claim, job_id, verify))
            except _Refused as refused:
                op = ops[refused.index]
                if op[0] == "check":
                    self._job_gone(job_id, probe)
                if op[1].startswith(self._path("claims")):
                    if op[0] == "delete":
                        lapsed_version = None
                        continue
                    if not probe and not uncertain:  # claim_next: just try the next job
                        self._contended_until = time.monotonic() + self.CONTENTION_MEMORY
                        self._local("claims", job_id, True)
                        raise errors.UnclaimableJob(f"job {job_id!r} is claimed") from None
                    held = self._gather([("get", self._path("claims", job_id))])[0]
                    if held is None:
                        continue
                    other = _load(held[0], job_id)
                    if uncertain and other.get("owner") == who and other.get("token") == token:
                        return self._adopt_claim(job_id, other, held[1], who, started)
                    if not self._live(other, held[1]):
                        lapsed_version = held[1].version
                        continue
                    self._local("claims", job_id, True)
                    raise errors.UnclaimableJob(
                        f"job {job_id!r} is claimed by {other.get('owner')!r}; it cannot be claimed"
                    ) from None
                found = self._gather([("get", self._path("state", job_id))])[0]
                state, state_version = (
                    (_load(found[0], job_id), found[1].version) if found else (None, None)
                )
                continue
            if static_read is not None:  # job nodes never change: the transaction checked it
                static = _load(static_read.get(timeout=self.session_timeout)[0], job_id)
            assert static is not None
            new_version = results[-1].version if state_version is not None else 0
            return self._claimed(
                job_id,
                static,
                new_state,
                new_version,
                claim_data,
                who,
                lease,
                started,
                state is None,
                verify=verify[0] if verify else None,
            )
        raise errors.UnclaimableJob(f"job {job_id!r}: too much contention, try again")

    def _job_gone(self, job_id: str, probe: bool = True) -> None:
        """Raise for a job that is no longer active (finished or unknown)."""
        self._local("jobs", job_id, False)
        if not probe:
            raise errors.UnclaimableJob(f"job {job_id!r} is no longer waiting")
        done = self._gather([("exists", self._path("done", job_id))])[0]
        if done is None:
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
        raise errors.UnclaimableJob(f"job {job_id!r} is finished; it cannot be claimed")

    def _adopt_claim(
        self, job_id: str, claim: dict[str, Any], stat: ZnodeStat, who: str, started: float
    ) -> Claim:
        """Our earlier attempt went through before the connection dropped: take it."""
        static, state = self._gather(
            [("get", self._path("jobs", job_id)), ("get", self._path("state", job_id))]
        )
        if static is None or state is None:
            raise errors.UnclaimableJob(f"job {job_id!r} changed while reconnecting")
        return self._claimed(
            job_id,
            _load(static[0], job_id),
            _load(state[0], job_id),
            state[1].version,
            claim,
            who,
            claim.get("lease"),
            started,
            False,
            claim_version=stat.version,
        )

    def _claimed(
        self,
        job_id: str,
        static: dict[str, Any],
        state: dict[str, Any],
        state_version: int,
        claim_data: dict[str, Any],
        who: str,
        lease: float | None,
        started: float,
        fresh: bool,
        claim_version: int = 0,
        verify: Any = None,
    ) -> Claim:
        """Record a successful claim locally and build the Claim."""
        token = state["token"]
        fence = _Fence(who, token, state_version, claim_version, static, state, lease)
        with self._lock:
            self._static[job_id] = static
            self._states[job_id] = (state, state_version)
            self._fences[job_id] = fence
            self._progress[job_id] = set() if fresh else None
            self._progress_dir[job_id] = not fresh
            cancel = job_id in self._view.members["cancel"]
        self._local("claims", job_id, True)
        job = self._active_job(job_id, static, state, claim_data, None, cancel)
        now = time.time()
        claim = Claim(
            job_id=job_id,
            owner=who,
            token=token,
            lease=lease,
            expires_at=None if lease is None else now + lease,
            deadline=math.inf if lease is None else started + lease,
            job=replace(job, lease_expires_at=None if lease is None else now + lease),
        )
        self._track(claim)
        if cancel:
            self._mark_cancel(job_id)
        if verify is None:
            self._verify_claim(job_id)
        else:  # the watching read went out with the claim; check its answer now
            verify.rawlink(functools.partial(self._claim_verified, job_id, token))
        self._count("claimed")
        self._emit(BoardEvent("claimed", job_id, {"token": token, "owner": who}))
        return claim

    def _trash_poison(
        self,
        job_id: str,
        static: dict[str, Any],
        state: dict[str, Any] | None,
        state_version: int | None,
        lapsed_version: int | None,
    ) -> None:
        """Trash a job claimed ``max_attempts`` times without finishing."""
        state = state or {}
        reason = self._poison_reason(state.get("attempts", 0), static.get("max_attempts", 0))
        current = self._active_job(job_id, static, state, None, None, False)
        fence = _Fence(None, current.token, state_version, lapsed_version, static, state)
        with self._lock:
            cancel = job_id in self._view.members["cancel"]
        done = self._finish_record(current, JobState.TRASHED, "poison", True, error=reason)
        if self._commit_finish(job_id, fence, done, cancel) is None:
            return
        self._count("poison")
        log.warning("%s: job %s trashed: %s", self, job_id, reason)
        self._emit(BoardEvent("trashed", job_id, {"reason": reason, "forced": True}))

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        started = self._local_clock()
        length = None if lease is None else self._lease_for(lease)
        out: dict[str, Claim | None] = {}
        to_write: list[tuple[Claim, _Fence]] = []
        to_read: list[Claim] = []
        for claim in claims:
            fence = self._fences.get(claim.job_id)
            held = self._held.get(claim.job_id)
            if (
                fence is None
                or held is None
                or fence.token != claim.token
                or fence.owner != claim.owner
            ):
                to_read.append(claim)
            elif self.claim_status(claim) is ClaimStatus.LOST:
                out[claim.job_id] = None
            elif fence.lease is None:
                out[claim.job_id] = held
            else:
                to_write.append((claim, fence))
        if to_read:
            out.update(self._read(lambda: self._renew_foreign(to_read)))
        if to_write:
            out.update(self._renew_leases(to_write, length, started))
        with self._lock:
            cancels = self._view.members["cancel"] & set(out)
        for job_id in cancels:
            if out[job_id] is not None:
                self._mark_cancel(job_id)
        self._apply_renewals(out)
        return out

    def _renew_foreign(self, claims: list[Claim]) -> dict[str, Claim | None]:
        """Check claims this board did not make against the stored claim nodes."""
        found = self._gather([("get", self._path("claims", c.job_id)) for c in claims])
        out: dict[str, Claim | None] = {}
        for claim, item in zip(claims, found, strict=True):
            data = _load(item[0], claim.job_id) if item else None
            ok = (
                data is not None
                and data.get("owner") == claim.owner
                and data.get("token") == claim.token
                and self._live(data, item[1])
            )
            out[claim.job_id] = claim if ok else None
        return out

    def _renew_leases(
        self, pairs: list[tuple[Claim, _Fence]], length: float | None, started: float
    ) -> dict[str, Claim | None]:
        """Rewrite our leased claim nodes (version-checked), all requests pipelined."""
        client = self.client
        pending = []
        for claim, fence in pairs:
            new_lease = length if length is not None else fence.lease
            data = _dump(
                {
                    "owner": fence.owner,
                    "token": fence.token,
                    "lease": new_lease,
                    "claimed_at": time.time(),
                }
            )
            path = self._path("claims", claim.job_id)
            pending.append(
                (claim, fence, new_lease, client.set_async(path, data, fence.claim_version))
            )
        out: dict[str, Claim | None] = {}
        now = time.time()
        for claim, fence, new_lease, result in pending:
            try:
                stat = result.get(timeout=self.session_timeout)
            except (NoNodeError, BadVersionError):
                out[claim.job_id] = None
                continue
            except (KazooException, KazooTimeoutError) as err:
                raise self._translate(err, f"renew {claim.job_id}") from err
            with self._lock:
                self._fences[claim.job_id] = replace(
                    fence, claim_version=stat.version, lease=new_lease
                )
            out[claim.job_id] = replace(
                claim, lease=new_lease, expires_at=now + new_lease, deadline=started + new_lease
            )
        return out

    # -- fenced writes --------------------------------------------------------

    def _fence_of(self, snap: _Snapshot) -> _Fence:
        """The versions a write must check, from a snapshot of an active job."""
        assert snap.static is not None
        state = snap.state or {}
        return _Fence(
            snap.claim.get("owner") if snap.claim else None,
            state.get("token", 0),
            snap.state_version,
            snap.claim_stat.version if snap.claim_stat else None,
            snap.static,
            state,
            snap.claim.get("lease") if snap.claim else None,
        )

    def _fence(
        self, job_id: str, who: str, token: int | None, force: bool
    ) -> tuple[_Fence, _Snapshot | None]:
        """Check ``who``/``token`` own the job (or ``force``) and return what to fence on.

        Our own claims are checked locally (the transaction re-checks them on
        the server); anything else is read and checked like MemoryBoard does.
        """
        self._check_owner_args(job_id, who, token, force)
        fence = self._fences.get(job_id)
        held = self._held.get(job_id)
        if not force and fence is not None and held is not None and fence.token == token:
            if fence.owner != who:
                raise errors.NotOwner(f"job {job_id!r} is owned by {fence.owner!r}, not {who!r}")
            if self._local_clock() < held.deadline:
                return fence, None
        snap = self._snapshot(job_id)
        self._check(snap, who, token, force)
        return self._fence_of(snap), snap

    def _check(self, snap: _Snapshot, who: str, token: int | None, force: bool) -> None:
        """Raise as MemoryBoard would when ``who``/``token`` may not write to the job."""
        job = self._job(snap)
        self._check_fence(snap.job_id, job.state, job.token, job.owner, who, token, force)

    def _checks(self, job_id: str, fence: _Fence) -> list[tuple[Any, ...]]:
        """The version checks that make a write fenced."""
        return [
            ("check", self._path("state", job_id), fence.state_version),
            ("check", self._path("claims", job_id), fence.claim_version),
        ]

    def save_progress(
        self, job: JobRef, who: str, token: int, atom_name: str, record: Mapping[str, Any]
    ) -> None:
        job_id = self._job_id(job)
        encoded = self._validate_atom(job_id, atom_name, record).encode()
        node = "a" + quote(atom_name, safe="")
        folder = self._path("progress", job_id)
        path = f"{folder}/{node}"

        def attempt(_uncertain: bool) -> None:
            for _ in range(self.MAX_ROUNDS):
                fence, _snap = self._fence(job_id, who, token, False)
                with self._lock:
                    known = self._progress.get(job_id)
                    has_dir = self._progress_dir.get(job_id, True)
                ops = self._checks(job_id, fence)
                if not has_dir:
                    ops.append(("create", folder, b"", False))
                if known is not None and node in known:
                    ops.append(("set", path, encoded, -1))
                else:
                    ops.append(("create", path, encoded, False))
                try:
                    self._transact(ops)
                except _Refused as refused:
                    op = ops[refused.index]
                    if op[0] == "check":
                        self._stale(job_id, who, token)  # raises unless still ours
                    else:
                        self._learn_progress(job_id, op, node, refused.error)
                    continue
                with self._lock:
                    self._progress_dir[job_id] = True
                    atoms = self._progress.get(job_id)
                    if atoms is not None:
                        atoms.add(node)
                return
            raise errors.BoardUnavailable(f"job {job_id!r}: progress kept racing other writers")

        self._retrying(f"save progress of {job_id}", attempt)

    def _learn_progress(
        self, job_id: str, op: tuple[Any, ...], node: str, error: Exception
    ) -> None:
        """What a refused progress write tells about the existing progress nodes."""
        with self._lock:
            atoms = self._progress.get(job_id)
            if op[0] == "create" and op[1] == self._path("progress", job_id):
                self._progress_dir[job_id] = True
            elif isinstance(error, NodeExistsError):
                self._progress_dir[job_id] = True
                self._progress[job_id] = (atoms or set()) | {node}
            elif op[0] == "create":  # NoNode: the folder is missing
                self._progress_dir[job_id] = False
                self._progress[job_id] = set()
            elif atoms is not None:  # NoNode on set: the atom is missing
                atoms.discard(node)

    def _stale(self, job_id: str, who: str, token: int | None) -> None:
        """A fenced transaction failed its checks: raise why, or refresh the fence
        (the job is still ours, e.g. a concurrent renew moved the claim's version)."""
        with self._lock:
            self._fences.pop(job_id, None)
        snap = self._snapshot(job_id)
        self._check(snap, who, token, False)
        if job_id in self._held:
            with self._lock:
                self._fences[job_id] = self._fence_of(snap)

    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._require_id(job)

        def read() -> dict[str, dict[str, Any]]:
            jobs, done, names = self._gather(
                [
                    ("exists", self._path("jobs", job_id)),
                    ("exists", self._path("done", job_id)),
                    ("get_children", self._path("progress", job_id)),
                ]
            )
            if jobs is None and done is None:
                raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
            names = [n for n in names or [] if n.startswith("a")]
            found = self._gather([("get", self._path("progress", job_id, n)) for n in names])
            records = {
                unquote(n[1:]): _load(f[0], job_id) for n, f in zip(names, found, strict=True) if f
            }
            with self._lock:
                if job_id in self._fences:
                    self._progress_dir[job_id] = bool(names) or self._progress_dir.get(
                        job_id, False
                    )
                    self._progress[job_id] = {n for n, f in zip(names, found, strict=True) if f}
            return records

        return self._read(read, f"load progress of {job_id}")

    def _finish_record(
        self,
        job: Job,
        state: JobState,
        who: str,
        force: bool,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        done = replace(
            job,
            state=state,
            owner=None,
            lease_expires_at=None,
            updated_at=now,
            finished_at=now,
            result=result,
            last_error=error if error is not None else job.last_error,
        ).to_dict()
        done["finished_by"] = who
        done["forced"] = force
        return done

    def _commit_finish(
        self, job_id: str, fence: _Fence, done: dict[str, Any], cancel: bool
    ) -> Job | None:
        """Move an active job to ``done/`` in one transaction; None if it was refused."""
        ops: list[tuple[Any, ...]] = []
        claim_path = self._path("claims", job_id)
        if fence.claim_version is not None:
            ops.append(("delete", claim_path, fence.claim_version))
        else:  # nobody may hold a claim meanwhile: take and drop it in the same transaction
            ops += [("create", claim_path, b"", True), ("delete", claim_path, -1)]
        if fence.state_version is not None:
            ops.append(("delete", self._path("state", job_id), fence.state_version))
        ops.append(("delete", self._path("jobs", job_id), -1))
        if cancel:
            ops.append(("delete", self._path("cancel", job_id), -1))
        ops.append(("create", self._path("done", job_id), _dump(done), False))
        try:
            self._transact(ops)
        except _Refused as refused:
            if ops[refused.index][1] == self._path("cancel", job_id):
                self._local("cancel", job_id, False)
            return None
        with self._lock:
            self._fences.pop(job_id, None)
            self._forget_caches(job_id)
        for kind in _VIEW_KINDS:
            self._local(kind, job_id, False)
        self._forget(job_id)
        self._count({"complete": "consumed"}.get(done["state"], done["state"]))
        return Job.from_dict(done)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._fences.pop(job_id, None)
            self._progress.pop(job_id, None)
            self._progress_dir.pop(job_id, None)
        self._untrack(job_id)

    def _finish(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        state: JobState,
        force: bool = False,
        result: Any = None,
        error: str | None = None,
        event: str,
    ) -> Job:
        result_json = self._encode(result, "result", job_id) if result is not None else None
        parsed = json.loads(result_json) if result_json is not None else None

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                try:
                    fence, snap = self._fence(job_id, who, token, force)
                except errors.InvalidState:
                    adopted = self._finished_by_us(job_id, who, token, state) if uncertain else None
                    if adopted is None:
                        raise
                    return adopted
                with self._lock:
                    cancel = (
                        snap.cancel if snap is not None else job_id in self._view.members["cancel"]
                    )
                current = (
                    self._job(snap)
                    if snap is not None
                    else self._active_job(
                        job_id, fence.static, fence.state, {"owner": who}, None, cancel
                    )
                )
                done = self._finish_record(current, state, who, force, result=parsed, error=error)
                finished = self._commit_finish(job_id, fence, done, cancel)
                if finished is not None:
                    self._emit(
                        BoardEvent(
                            event,
                            job_id,
                            {
                                "token": fence.token,
                                "owner": who,
                                "forced": force,
                                "flow": current.flow,
                            },
                        )
                    )
                    return finished
                if not force:
                    self._stale(job_id, who, token)
            raise errors.BoardUnavailable(f"job {job_id!r}: finishing kept racing other writers")

        return self._retrying(f"{event} {job_id}", attempt)

    def _finished_by_us(
        self, job_id: str, who: str, token: int | None, state: JobState
    ) -> Job | None:
        found = self._gather([("get", self._path("done", job_id))])[0]
        done = _load(found[0], job_id) if found else None
        if (
            done
            and done.get("finished_by") == who
            and done.get("token") == token
            and done.get("state") == state.value
        ):
            self._forget(job_id)
            return Job.from_dict(done)
        return None

    def consume(self, job: JobRef, who: str, token: int, *, result: Any = None) -> Job:
        return self._finish(
            self._job_id(job), who, token, state=JobState.COMPLETE, result=result, event="consumed"
        )

    def fail(
        self, job: JobRef, who: str, token: int, *, error: str, cancelled: bool = False
    ) -> Job:
        job_id = self._job_id(job)
        message = self._validate_error(job_id, error)
        state = JobState.CANCELLED if cancelled else JobState.FAILED
        return self._finish(
            job_id,
            who,
            token,
            state=state,
            error=message,
            event="cancelled" if cancelled else "failed",
        )

    def trash(
        self,
        job: JobRef,
        who: str,
        token: int | None = None,
        *,
        reason: str | None = None,
        force: bool = False,
    ) -> Job:
        job_id = self._job_id(job)
        message = self._validate_error(job_id, reason or "trashed", "reason")
        return self._finish(
            job_id, who, token, state=JobState.TRASHED, force=force, error=message, event="trashed"
        )

    def abandon(
        self,
        job: JobRef,
        who: str,
        token: int | None = None,
        *,
        reason: str | None = None,
        force: bool = False,
    ) -> Job:
        job_id = self._job_id(job)
        message = self._validate_error(job_id, reason, "reason") if reason is not None else None

        def attempt(uncertain: bool) -> Job:
            for _ in range(self.MAX_ROUNDS):
                try:
                    fence, snap = self._fence(job_id, who, token, force)
                except errors.NotOwner:
                    if uncertain and self._released_by_us(job_id, who, token):
                        return self.get(job_id)
                    raise
                if fence.claim_version is None or (
                    snap is not None and not self._live(snap.claim, snap.claim_stat)
                ):
                    raise errors.InvalidState(f"job {job_id!r} is not claimed; nothing to abandon")
                now = time.time()
                state = {
                    **fence.state,
                    "owner": None,
                    "updated_at": now,
                    "released_by": who,
                    "forced": force,
                }
                if message is not None:
                    state["last_error"] = message
                ops = [
                    ("delete", self._path("claims", job_id), fence.claim_version),
                    ("set", self._path("state", job_id), _dump(state), fence.state_version),
                ]
                try:
                    results = self._transact(ops)
                except _Refused:
                    if not force:
                        self._stale(job_id, who, token)
                    continue
                with self._lock:
                    self._states[job_id] = (state, results[1].version)
                    self._claims.pop(job_id, None)
                    cancel = job_id in self._view.members["cancel"]
                self._local("claims", job_id, False)
                self._forget(job_id)
                self._count("abandoned")
                self._emit(
                    BoardEvent(
                        "abandoned",
                        job_id,
                        {
                            "token": fence.token,
                            "owner": who,
                            "forced": force,
                            "flow": fence.static.get("flow"),
                        },
                    )
                )
                return self._active_job(job_id, fence.static, state, None, None, cancel)
            raise errors.BoardUnavailable(f"job {job_id!r}: abandon kept racing other writers")

        return self._retrying(f"abandon {job_id}", attempt)

    def _released_by_us(self, job_id: str, who: str, token: int | None) -> bool:
        found = self._gather([("get", self._path("state", job_id))])[0]
        state = _load(found[0], job_id) if found else None
        return bool(state and state.get("released_by") == who and state.get("token") == token)

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
            cached = (_load(found[0], job_id), found[1])
            with self._lock:
                self._claims[job_id] = cached
        return cached[0].get("owner") if self._live(*cached) else None

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        flows = None if flows is None else frozenset(flows)
        with self._changed:
            while True:
                if self._view.best(flows, pop=False) is not None:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._closed:
                    return False
                self._changed.wait(remaining)

    # -- entities -------------------------------------------------------------

    def _entity_path(self, kind: str, name: str | None = None) -> str:
        folder = self._path("entities", "k" + quote(kind, safe=""))
        return folder if name is None else f"{folder}/n{quote(name, safe='')}"

    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        encoded = self._encode(dict(metadata or {}), "metadata", name)
        data = f'{{"name":{json.dumps(name)},"kind":{json.dumps(kind)},"last_seen":{time.time()},"metadata":{encoded}}}'
        self._entities[(kind, name)] = data.encode()
        self._read(lambda: self._put_entity(kind, name, data.encode()), f"register {name}")

    def _put_entity(self, kind: str, name: str, data: bytes) -> None:
        path = self._entity_path(kind, name)
        try:
            self._call("set", path, data)
        except NoNodeError:
            try:
                self._call(
                    "create", path, data, ephemeral=True, makepath=True, **self._create_kwargs()
                )
            except NodeExistsError:
                self._call("set", path, data)

    def unregister_entity(self, name: str, kind: str = "conductor") -> None:
        self._entities.pop((kind, name), None)

        def delete() -> None:
            try:
                self._call("delete", self._entity_path(kind, name))
            except NoNodeError:
                pass

        self._read(delete, f"unregister {name}")

    def iter_entities(self, kind: str = "conductor") -> list[Entity]:
        def read() -> list[Entity]:
            names = self._gather([("get_children", self._entity_path(kind))])[0] or []
            found = self._gather([("get", f"{self._entity_path(kind)}/{n}") for n in names])
            out = []
            horizon = time.time() - self.DEFAULT_ENTITY_TTL
            for item in found:
                data = _load(item[0], "entity") if item else None
                if data and data.get("last_seen", 0) >= horizon:
                    out.append(
                        Entity(data["name"], kind, data.get("metadata", {}), data["last_seen"])
                    )
            return sorted(out, key=lambda e: e.name)

        return self._read(read, "list entities")

    # -- operators ------------------------------------------------------------

    def purge(
        self, states: Collection[JobState | str] = FINISHED_STATES, older_than: float = 0.0
    ) -> int:
        wanted = self._normalise_states(states, False)
        if not wanted <= FINISHED_STATES:
            raise errors.InvalidState(
                "only finished jobs (complete, failed, trashed, cancelled) can be purged"
            )
        count = self._read(lambda: self._sweep(wanted, older_than), "purge")
        if count:
            self._count("purged", count)
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
        names = [n for n in names or [] if _parse_id(n)]
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
                if f and (_load(f[0], n) or {}).get("state") in {s.value for s in wanted}
            ]
        doomed = expired + candidates
        folders = self._gather([("get_children", self._path("progress", n)) for n in doomed])
        pending = []
        for name, atoms in zip(doomed, folders, strict=True):
            tx = self.client.transaction()
            for atom in atoms or []:
                tx.delete(self._path("progress", name, atom))
            if atoms is not None:
                tx.delete(self._path("progress", name))
            tx.delete(self._path("done", name))
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

    def _count(self, key: str, n: int = 1) -> None:
        """Count an event; counts reach this instance's counters node within
        ``COUNTER_FLUSH_INTERVAL`` (one small write per interval, not per event)."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n
            self._counts_dirty = True
        self._later("counters", self.COUNTER_FLUSH_INTERVAL, self._flush_counts)

    def _flush_counts(self) -> None:
        with self._flush_lock:
            with self._lock:
                if not self._counts_dirty or self._client is None:
                    return
                data = _dump(self._counts)
                self._counts_dirty = False
            path = self._path("counters", self._instance)
            try:
                try:
                    self._call("set", path, data)
                except NoNodeError:
                    self._call("create", path, data, **self._create_kwargs())
            except (KazooException, KazooTimeoutError, errors.BoardError) as err:
                with self._lock:
                    self._counts_dirty = True
                log.debug("%s: counters not written: %s", self, err)

    def _later(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` once in ``delay`` seconds on a timer thread (once per pending key)."""
        with self._lock:
            if key in self._timers or self._closed:
                return

            def run() -> None:
                with self._lock:
                    self._timers.pop(key, None)
                if not self._closed:
                    fn()

            timer = self._timers[key] = threading.Timer(delay, run)
            timer.daemon = True
        timer.start()

    def counters(self) -> dict[str, int]:
        self._flush_counts()

        def read() -> dict[str, int]:
            names = self._gather([("get_children", self._path("counters"))])[0] or []
            total: dict[str, int] = {}
            for item in self._gather([("get", self._path("counters", n)) for n in names]):
                for key, value in (_load(item[0], "counters") or {}).items() if item else ():
                    if isinstance(value, int):
                        total[key] = total.get(key, 0) + value
            return total

        return self._read(read, "counters")

    def _fold_counters(self) -> None:
        """On close: add our counts to ``counters/total`` and drop our node."""
        self._flush_counts()
        if not self._counts:
            self._call("delete", self._path("counters", self._instance))
            return
        total_path = self._path("counters", "total")
        for _ in range(self.MAX_ROUNDS):
            found = self._gather([("get", total_path)])[0]
            total = (_load(found[0], "counters") or {}) if found else {}
            for key, value in self._counts.items():
                total[key] = total.get(key, 0) + value
            ops: list[tuple[Any, ...]] = [
                ("set", total_path, _dump(total), found[1].version)
                if found
                else ("create", total_path, _dump(total), False),
                ("delete", self._path("counters", self._instance), -1),
            ]
            try:
                self._transact(ops)
                return
            except _Refused:
                continue
