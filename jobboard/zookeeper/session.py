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
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote

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
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry, RetryFailedError
from kazoo.security import ACL

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.model import Claim, ClaimStatus, Entity
from jobboard.zookeeper.nodes import FOLDERS, dump, load

log = logging.getLogger("jobboard.zookeeper")

T = TypeVar("T")

#: Errors after which a request may or may not have been applied; retried.
TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError, KazooTimeoutError)
#: Results of the operations of a failed transaction other than the failing one.
_CASCADE = (RolledBackError, RuntimeInconsistency)


class Refused(Exception):
    """A multi-op transaction failed; ``index`` names the failing operation."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"operation {index} failed: {error!r}")
        self.index = index
        self.error = error


class ZkSession(JobBoard):
    """Requests to ZooKeeper and the session they run in."""

    REQUEST_LIMIT: ClassVar[int]
    MAX_ROUNDS: ClassVar[int]
    SUSPENDED_LOSS_FRACTION: ClassVar[float]
    COUNTER_FLUSH_INTERVAL: ClassVar[float]

    hosts: str
    root: str
    session_timeout: float
    connect_timeout: float
    _digest: str | None
    _acl: list[ACL] | None
    _client: KazooClient | None
    _owns_client: bool
    _instance: str
    _lock: threading.RLock
    _retry: KazooRetry
    _timers: dict[str, threading.Timer]
    _suspended_at: float | None
    _session_id: int | None
    _connected: bool
    _closed: bool
    _counts: dict[str, int]
    _counts_dirty: bool
    _flush_lock: threading.Lock
    _entities: dict[tuple[str, str], bytes]

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

    def _drop_client(self) -> None:
        """Stop following the client; stop and forget it if the board made it."""
        if self._client is not None:
            self._client.remove_listener(self._on_state)
            if self._owns_client:
                self._client.stop()
                self._client.close()
                self._client = None

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
                self.client.handler.spawn(self._reconnected)

    def _reconnected(self) -> None:
        """After a reconnect: register again on a new session, then resync the view."""
        try:
            client = self.client
            new_session = client.client_id[0] if client.client_id else None
            if new_session != self._session_id:
                self._session_id = new_session
                for (kind, name), data in list(self._entities.items()):
                    self._put_entity(kind, name, data)
            self._resync()
        except (errors.BoardError, KazooException, KazooTimeoutError) as err:
            log.warning("%s: resync after reconnect failed: %s", self, err)

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
        """Create the namespace, its folders and this instance's counters node if missing."""
        client = self.client
        self._call("ensure_path", self.root, acl=self._acl)
        pending = [
            client.create_async(self._path(kind), b"", **self._create_kwargs()) for kind in FOLDERS
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
        """Commit one multi-op transaction; raise ``Refused`` naming the failed op.

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
        results: list[Any] = pending.get(timeout=self.session_timeout)
        for index, result in enumerate(results):
            if isinstance(result, Exception) and not isinstance(result, _CASCADE):
                raise Refused(index, result)
        return results

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

    # -- counters -------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        """Count an event; counts reach this instance's counters node within
        ``COUNTER_FLUSH_INTERVAL`` (one small write per interval, not per event)."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n
            self._counts_dirty = True
        self._later("counters", self.COUNTER_FLUSH_INTERVAL, self._flush_counts)

    def _flush_counts(self) -> None:
        """Write this instance's counts to its node if they changed."""
        with self._flush_lock:
            with self._lock:
                if not self._counts_dirty or self._client is None:
                    return
                data = dump(self._counts)
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

    def counters(self) -> dict[str, int]:
        self._flush_counts()

        def read() -> dict[str, int]:
            names = self._gather([("get_children", self._path("counters"))])[0] or []
            total: dict[str, int] = {}
            for item in self._gather([("get", self._path("counters", n)) for n in names]):
                for key, value in (load(item[0], "counters") or {}).items() if item else ():
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
            total = (load(found[0], "counters") or {}) if found else {}
            for key, value in self._counts.items():
                total[key] = total.get(key, 0) + value
            ops: list[tuple[Any, ...]] = [
                ("set", total_path, dump(total), found[1].version)
                if found
                else ("create", total_path, dump(total), False),
                ("delete", self._path("counters", self._instance), -1),
            ]
            try:
                self._transact(ops)
                return
            except Refused:
                continue

    # -- flow pauses: persistent nodes ------------------------------------------

    def _read_pauses(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            names = self._gather([("get_children", self._path("pauses"))])[0] or []
            found = self._gather([("get", self._path("pauses", n)) for n in names])
            return {
                unquote(n[1:]): item[0].decode()
                for n, item in zip(names, found, strict=True)
                if item is not None and n.startswith("f")
            }

        return self._read(read, "paused flows")

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        path = self._path("pauses", "f" + quote(flow, safe=""))

        def write() -> bool:
            if encoded is None:
                try:
                    self._call("delete", path)
                except NoNodeError:
                    return False
                return True
            try:
                self._call("set", path, encoded.encode())
                return True
            except NoNodeError:
                pass
            try:
                self._call("create", path, encoded.encode(), makepath=True, **self._create_kwargs())
            except NodeExistsError:
                self._call("set", path, encoded.encode())
                return True
            return False

        return self._read(write, "pause flow" if encoded else "resume flow")

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
                data = load(item[0], "entity") if item else None
                if data and data.get("last_seen", 0) >= horizon:
                    out.append(
                        Entity(data["name"], kind, data.get("metadata", {}), data["last_seen"])
                    )
            return sorted(out, key=lambda e: e.name)

        return self._read(read, "list entities")
