"""The ZooKeeper session of a board: requests, retries, connection state, counters, entities.

The lowest layer of :class:`jobboard.zookeeper.ZookeeperBoard`, which sets up
the state and tunables declared here. Requests are sent asynchronously and
awaited at most a session timeout; idempotent ones are retried across
connection trouble with jittered backoff up to ``RETRY_DEADLINE``. The kazoo
state listener turns SUSPENDED into uncertain claims, LOST into lost claims,
and a reconnect into a resync of the layers above.
"""

from __future__ import annotations

import abc
import json
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
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
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.retry import KazooRetry, RetryFailedError
from kazoo.security import ACL

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.model import Claim, ClaimStatus, Entity
from jobboard.zookeeper.listing import list_children_async
from jobboard.zookeeper.liveness import ServerTime, SessionClock
from jobboard.zookeeper.nodes import FOLDERS, dump, load

log = logging.getLogger("jobboard.zookeeper")

T = TypeVar("T")

#: Errors after which a request may or may not have been applied; retried.
TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError, KazooTimeoutError)
#: The events a board counts (``counters/<event>``).
COUNTED = (
    "posted",
    "claimed",
    "consumed",
    "failed",
    "trashed",
    "cancelled",
    "abandoned",
    "poison",
    "purged",
)
#: Results of the operations of a failed transaction other than the failing one.
_CASCADE = (RolledBackError, RuntimeInconsistency)


class Refused(Exception):
    """A multi-op transaction failed; ``index`` names the failing operation."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"operation {index} failed: {error!r}")
        self.index = index
        self.error = error


class Pacer:
    """Runs calls later, each once per pending key, on one thread (started when
    needed): a timer thread per call would cost more than most calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._wake = threading.Condition()
        self._due: dict[str, tuple[float, Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False

    def later(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        with self._wake:
            if key in self._due:
                return
            self._stopped = False
            self._due[key] = (time.monotonic() + delay, fn)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._wake.notify()

    def stop(self) -> None:
        """Drop what is pending; the thread ends."""
        with self._wake:
            self._due.clear()
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [k for k, (at, _) in self._due.items() if at <= now]
                if not due:
                    nearest = min((at for at, _ in self._due.values()), default=now + 5.0)
                    self._wake.wait(nearest - now)
                    continue
                calls = [self._due.pop(k)[1] for k in due]
            for fn in calls:
                try:
                    fn()
                except Exception:  # a paced call must never stop the others
                    log.exception("%s: paced call failed", self.name)


class PollHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, waiting on its sockets with one ``poll(2)`` call.

    kazoo's connection thread waits before every read and write of a packet;
    its default ``select`` builds, fills and closes an epoll set each time
    (four system calls and a fair amount of Python): about a sixth of a busy
    conductor's CPU. A poll object costs no system call to build.
    """

    READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL
    WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL

    def select(
        self, rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None
    ) -> tuple[list[Any], list[Any], list[Any]]:
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be non-negative")
        poller = select.poll()
        for obj in rlist:
            poller.register(obj, select.POLLIN | select.POLLPRI)
        for obj in wlist:
            poller.register(obj, select.POLLOUT | (select.POLLIN if obj in rlist else 0))
        ready = poller.poll(None if timeout is None else timeout * 1000.0)
        if not ready:
            return [], [], []
        events = dict(ready)
        readable = [o for o in rlist if events.get(_fd(o), 0) & self.READ]
        writable = [o for o in wlist if events.get(_fd(o), 0) & self.WRITE]
        return readable, writable, []


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


class ZkSession(JobBoard):
    """Requests to ZooKeeper and the session they run in."""

    REQUEST_LIMIT: ClassVar[int]
    MAX_ROUNDS: ClassVar[int]
    SESSION_SAFETY_MARGIN: ClassVar[float]

    hosts: str
    root: str
    session_timeout: float
    requested_session_timeout: float
    _clock: SessionClock
    _time: ServerTime
    connect_timeout: float
    _digest: str | None
    _acl: list[ACL] | None
    _client: KazooClient | None
    _owns_client: bool
    _instance: str
    _lock: threading.RLock
    _retry: KazooRetry
    _pacer: Pacer
    _session_id: int | None
    _connected: bool
    _closed: bool
    _counter_seq: Iterator[int]
    _entities: dict[tuple[str, str], bytes]
    _settings: int | None = None

    # -- the session ----------------------------------------------------------

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

    def _open_session(self) -> None:
        """Create (or check a given) client, start it, follow its state, lay out the folders."""
        if self._client is None:
            self._client = KazooClient(
                hosts=self.hosts,
                timeout=self.requested_session_timeout,
                connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=1.0),
                auth_data=[("digest", self._digest)] if self._digest else None,
                handler=PollHandler(),
            )
            self._owns_client = True
        client = self._client
        requested = self.requested_session_timeout
        if not self._owns_client:
            requested = client._session_timeout / 1000.0
        self._clock = SessionClock(requested, self.SESSION_SAFETY_MARGIN)
        self._clock.attach(client)
        if self._owns_client and not client.connected:
            client.start(timeout=self.connect_timeout)
        elif not client.connected:
            raise errors.BoardUnavailable(f"{self}: the given kazoo client is not connected")
        elif self._digest and not self._owns_client:
            client.add_auth("digest", self._digest)
        self._session_id = client.client_id[0] if client.client_id else None
        self.session_timeout = self._clock.timeout
        client.add_listener(self._on_state)
        self._read(self._ensure_layout)
        self._read(self._sync_time)

    def _sync_time(self) -> None:
        """Learn the servers' clock from the mtime of a write (the namespace node is
        touched). Best effort: a board that may not write keeps what it knew."""
        sent = time.time()
        try:
            stat = self._call("set", self.root, b"")
        except NoAuthError:
            return
        self._time.learn(sent, time.time(), stat.mtime)

    def _drop_client(self) -> None:
        """Stop following the client; stop and forget it if the board made it."""
        if self._client is not None:
            self._clock.detach()
            self._client.remove_listener(self._on_state)
            if self._owns_client:
                self._client.stop()
                self._client.close()
                self._client = None

    def _connection_uncertain(self) -> bool:
        client = self._client
        return client is None or client.state != KazooState.CONNECTED

    def claim_status(self, claim: Claim | str) -> ClaimStatus:
        """As :meth:`JobBoard.claim_status`; a session that may have expired by now
        (not heard from the server for the granted session timeout, less a safety
        margin) means lost, even while the connection only looks suspended."""
        status = super().claim_status(claim)
        if status is not ClaimStatus.LOST and time.monotonic() >= self._clock.alive_until():
            self._mark_lost(claim if isinstance(claim, str) else claim.job_id)
            return ClaimStatus.LOST
        return status

    def claim_uncertain_since(self, claim: Claim | str) -> float | None:
        """While ``claim`` is ``UNCERTAIN``: when (``time.monotonic()``) the server was
        last heard from, the moment from which the session may be running out."""
        if self.claim_status(claim) is not ClaimStatus.UNCERTAIN:
            return None
        return self._clock.heard_at

    def uncertain_claim_bound(self) -> float:
        """Seconds an ``UNCERTAIN`` claim stays trusted after the server was last
        heard from: the granted session timeout less the safety margin (when
        :meth:`claim_status` turns it ``LOST``)."""
        return self._clock.trusted_for()

    def _on_state(self, state: str) -> None:
        """kazoo connection state listener (runs on kazoo's connection thread)."""
        if state == KazooState.SUSPENDED:
            log.warning("%s: connection suspended; claims are uncertain", self)
        elif state == KazooState.LOST:
            with self._lock:
                held = list(self._held)
            for job_id in held:
                self._mark_lost(job_id)
            if held:
                log.warning("%s: session lost; %d claims are gone", self, len(held))
        else:
            self.session_timeout = self._clock.timeout
            if self._connected and not self._closed:
                self.client.handler.spawn(self._reconnected)

    def _reconnected(self) -> None:
        """After a reconnect: register again on a new session, then resync the view."""
        try:
            client = self.client
            new_session = client.client_id[0] if client.client_id else None
            if new_session != self._session_id:
                self._session_id = new_session
                self._forget_places()
                for (kind, name), data in list(self._entities.items()):
                    self._put_entity(kind, name, data)
                self._sync_time()
            self._resync()
        except (errors.BoardError, KazooException, KazooTimeoutError) as err:
            log.warning("%s: resync after reconnect failed: %s", self, err)

    def _forget_places(self) -> None:
        """A new session: forget the ephemeral places the old one held (``waiters``)."""

    @abc.abstractmethod
    def _resync(self) -> None:
        """List again with watches and re-check our claims (after a reconnect)."""

    # -- paths, requests, retries, errors --------------------------------------

    def _path(self, kind: str, *names: str) -> str:
        """The path of a folder of the layout, or of a node in it."""
        return "/".join((self.root, kind, *names))

    def _create_kwargs(self) -> dict[str, Any]:
        return {"acl": self._acl} if self._acl else {}

    def _ensure_layout(self) -> None:
        """Create the namespace, its folders and the counters' folders if missing."""
        client = self.client
        self._call("ensure_path", self.root, acl=self._acl)
        pending = [
            client.create_async(self._path(kind), b"", **self._create_kwargs()) for kind in FOLDERS
        ]
        pending += [
            client.create_async(self._path("counters", key), b"", **self._create_kwargs())
            for key in COUNTED
        ]
        for result in pending:
            try:
                result.get(timeout=self.session_timeout)
            except NodeExistsError:
                pass

    def _translate(self, err: BaseException, what: str) -> errors.BoardError:
        """The board error for a kazoo error met while doing ``what``."""
        if isinstance(err, NoAuthError):
            return errors.BoardError(f"{self}: {what}: permission denied by the node's ACL")
        if isinstance(err, (RetryFailedError, ConnectionClosedError, *TRANSIENT)):
            return errors.BoardUnavailable(f"{self}: {what}: ZooKeeper unavailable ({err!r})")
        return errors.BoardError(f"{self}: {what}: {err!r}")

    def _retrying(self, what: str, fn: Callable[[bool], T]) -> T:
        """Run ``fn(uncertain)`` retrying connection trouble with jittered backoff and a
        deadline. ``uncertain`` is True after a failed attempt whose write may have
        been applied, so that ``fn`` can recognise its own earlier success."""
        uncertain = False

        def attempt() -> T:
            nonlocal uncertain
            try:
                return fn(uncertain)
            except TRANSIENT as err:
                uncertain = True
                if isinstance(err, KazooTimeoutError):
                    raise OperationTimeoutError() from err
                raise

        if self._client is None or self._closed:
            raise errors.BoardUnavailable(f"{self} is not connected")
        try:
            result: T = self._retry.copy()(attempt)
            return result
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
            list_children_async(client, path)
            if op == "listing"
            else getattr(client, f"{op}_async")(path)
            for op, path in calls
        ]
        if len(pending) > 1:  # answered in order: wake once, when the last is in
            pending[-1].wait(self.session_timeout)
        out = []
        for result in pending:
            try:
                out.append(result.get(timeout=self.session_timeout))
            except NoNodeError:
                out.append(None)
        return out

    def _transact(
        self, ops: list[tuple[Any, ...]], after: Callable[[], Any] | None = None
    ) -> list[Any]:
        """Commit one multi-op transaction; raise ``Refused`` naming the failed op.

        ``after`` may send more requests behind the transaction before its answer
        is awaited (same round trip; ZooKeeper answers them in order); the answer
        to the last of them (which ``after`` returns) is awaited first, so that
        the caller wakes once, with every answer in."""
        tx = self.client.transaction()
        size = 0
        for op, path, *args in ops:
            if op == "create":
                value, ephemeral, *sequence = args
                size += len(value)
                tx.create(path, value, acl=self._acl, ephemeral=ephemeral, sequence=bool(sequence))
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
        last = after() if after is not None else None
        if last is not None:
            last.wait(self.session_timeout)
        results: list[Any] = pending.get(timeout=self.session_timeout)
        for index, result in enumerate(results):
            if isinstance(result, Exception) and not isinstance(result, _CASCADE):
                raise Refused(index, result)
        return results

    def _later(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` once in ``delay`` seconds (once per pending key)."""
        if not self._closed:
            self._pacer.later(key, delay, fn)

    # -- counters -------------------------------------------------------------
    #
    # An event is counted inside the transaction that makes it happen: the
    # transaction creates and deletes a child of ``counters/<event>``, which
    # moves that folder's ``cversion`` by 2 and leaves no node behind. Counts are
    # therefore exact whatever happens to the process, cost no extra round trip,
    # and never contend (no version is checked on the folder).

    def _counted(self, key: str, n: int = 1) -> list[tuple[Any, ...]]:
        """The operations that count ``n`` events ``key`` in a transaction."""
        ops: list[tuple[Any, ...]] = []
        for _ in range(n):
            path = self._path("counters", key, f"c{self._instance}-{next(self._counter_seq)}")
            ops += [("create", path, b"", False), ("delete", path, -1)]
        return ops

    def counters(self) -> dict[str, int]:
        def read() -> dict[str, int]:
            names, *stats = self._gather(
                [("get_children", self._path("counters"))]
                + [("exists", self._path("counters", k)) for k in COUNTED]
            )
            names = names or []
            total = {k: s.cversion // 2 for k, s in zip(COUNTED, stats, strict=True) if s}
            # Records of earlier versions (one node per board instance): added in.
            legacy = [n for n in names if n not in COUNTED]
            for item in self._gather([("get", self._path("counters", n)) for n in legacy]):
                try:
                    record = (load(item[0], "counters") or {}) if item else {}
                except errors.InvalidJob:
                    continue
                for key, value in record.items():
                    if isinstance(value, int) and not isinstance(value, bool):
                        total[key] = total.get(key, 0) + value
            return {k: v for k, v in total.items() if v}

        return self._read(read, "counters")

    # -- entities: ephemeral nodes of the session -----------------------------

    def _entity_path(self, kind: str, name: str | None = None) -> str:
        folder = self._path("entities", "k" + quote(kind, safe=""))
        return folder if name is None else f"{folder}/n{quote(name, safe='')}"

    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        encoded = self._encode(dict(metadata or {}), "metadata", name)
        info = {
            "name": name,
            "kind": kind,
            "last_seen": time.time(),
            "metadata": json.loads(encoded),
        }
        data = self._entities[(kind, name)] = dump(info)
        self._read(lambda: self._put_entity(kind, name, data), f"register {name}")

    def _put_entity(self, kind: str, name: str, data: bytes) -> None:
        path = self._entity_path(kind, name)
        # The settings node is read in the same round trip as the registration.
        settings = self.client.exists_async(self._path("settings"))
        try:
            self._call("set", path, data)
        except NoNodeError:
            try:
                self._call(
                    "create", path, data, ephemeral=True, makepath=True, **self._create_kwargs()
                )
            except NodeExistsError:
                self._call("set", path, data)
        stat = settings.get(timeout=self.session_timeout)
        minute = int(time.monotonic() // 60)
        self._settings = (-1 if stat is None else stat.version) * 1_000_000 + minute

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
                data = load(item[0], "entity") if item else None
                if data and data.get("last_seen", 0) >= horizon:
                    out.append(
                        Entity(data["name"], kind, data.get("metadata", {}), data["last_seen"])
                    )
            return sorted(out, key=lambda e: e.name)

        return self._read(read, "list entities")
