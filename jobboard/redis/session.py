"""Requests to the Redis server: scripts, pipelines, retries and error translation.

The bottom layer of :class:`jobboard.redis.RedisBoard` (which sets up the
state declared here). Every request goes through :meth:`RedisSession._call`:
reads and idempotent writes (``safe``) retry connection errors with jittered
exponential backoff up to a deadline; other writes are sent once, and a
connection error surfaces as ``BoardUnavailable`` saying whether the write
may have happened. A script's ``JB <CODE>`` refusal becomes the contract's
error.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, ClassVar, TypeVar

import redis
import tenacity

from jobboard import errors
from jobboard.base import JobBoard
from jobboard.redis import topology
from jobboard.redis.decoding import REFUSALS

__all__ = ["RedisSession"]

log = logging.getLogger("jobboard.redis")

T = TypeVar("T")

_SCRIPTS = (
    "post",
    "claim",
    "claim_next",
    "renew",
    "save_progress",
    "finish",
    "abandon",
    "cancel",
    "purge",
    "register_entity",
    "put_schedule",
    "remove_schedule",
    "hello",
    "reset",
    "set_pause",
    "observe",
)
#: The server run's id in an INFO reply.
_RUN_ID = re.compile(r"run_id:([0-9a-f]+)")
#: Scripts run without the guard (they are how a client checks the board).
_UNGUARDED = frozenset({"hello", "reset", "set_pause", "observe"})

#: Around every other script: take off the client's known run and epoch and
#: whether the server's run id must be read here, check them (``guard``), run
#: the script's body, reply ``{gen, reply}``.
_GUARD_HEAD = """
local CHECK_RUN = table.remove(ARGV) == '1'
local KNOWN_EPOCH = tonumber(table.remove(ARGV))
local KNOWN_RUN = table.remove(ARGV)
local refusal = guard(ARGV[1], KNOWN_RUN, KNOWN_EPOCH, CHECK_RUN)
if refusal then
  return refusal
end
local function body()
"""
_GUARD_TAIL = """
end
local reply = body()
if type(reply) == 'table' and reply.err then
  return reply
end
return {GEN, reply}
"""


@functools.cache
def _script_source(name: str) -> str:
    """One script's text with the shared helpers of ``_lib.lua`` in front and,
    unless it is unguarded, the guard around it."""
    folder = resources.files("jobboard.redis") / "lua"
    lib, body = (folder / "_lib.lua").read_text(), (folder / f"{name}.lua").read_text()
    if name in _UNGUARDED:
        return lib + "\n" + body
    return lib + _GUARD_HEAD + body + _GUARD_TAIL


class RedisSession(JobBoard):
    """The client of one board, and how requests are sent and their errors told."""

    #: Seconds to wait for a TCP connection to the server.
    CONNECT_TIMEOUT: ClassVar[float] = 2.0
    #: Seconds a request waits for its reply before the server counts as unreachable.
    SOCKET_TIMEOUT: ClassVar[float] = 5.0
    #: Seconds during which reads and idempotent writes retry connection errors.
    RETRY_DEADLINE: ClassVar[float] = 5.0
    #: First and longest pause (seconds) between those retries (jittered, doubling).
    RETRY_INITIAL: ClassVar[float] = 0.05
    RETRY_MAX: ClassVar[float] = 1.0
    #: Seconds of silence after which the event link is checked with a PING.
    HEALTH_CHECK_INTERVAL: ClassVar[int] = 10

    retry_deadline: float
    _given: redis.Redis | None
    _connection: dict[str, Any]
    _prefix: str
    _client: redis.Redis | None
    _scripts: dict[str, Any]
    _subscribed: threading.Event
    # What this client knows of the board's marker (see ``durability``).
    _run_id: str
    _epoch: int
    _gen: int
    _check_run: str

    def _open_client(self) -> redis.Redis:
        """The client (the given one, or a new one), with the scripts registered,
        once it answers a PING; ``BoardUnavailable`` when it does not."""
        # Except on a Cluster (whose client installs its own connect hook), the
        # board checks the server's run id once per connection (_on_connection).
        on_connect = None if "startup_nodes" in self._connection else self._on_connection
        client = self._given or topology.make_client(
            self._connection,
            health_check_interval=self.HEALTH_CHECK_INTERVAL,
            on_connect=on_connect,
        )
        # A given client's connections (or a Cluster's) are not ours to check: its
        # scripts ask the server's run id themselves (one INFO per script).
        self._check_run = "1" if self._given is not None or on_connect is None else "0"
        self._client = client
        self._scripts = {n: client.register_script(_script_source(n)) for n in _SCRIPTS}
        try:
            self._call("connect", None, client.ping, safe=True)
            self._check_server(client)
            try:
                self._call("connect", None, self._hello, safe=True)
            except errors.BoardRegressed:
                pass  # recorded and logged: reads work, every change is refused
        except errors.BoardError:
            self._client = None
            if self._given is None:
                client.close()
            raise
        return client

    def _check_server(self, client: redis.Redis) -> None:
        """Check the server's persistence and eviction settings (see ``durability``)."""

    def _on_connection(self, connection: redis.connection.AbstractConnection) -> None:
        """Every new connection of the board's own client: which server run answers?

        A restarted server, or a replica promoted in its place, is only ever
        reached over a new connection, so checking the run id here (one INFO
        per connection) tells every script's guard what an INFO inside each
        script would: a new run is checked with hello, on this connection,
        before any request is sent over it.
        """
        connection.on_connect()
        if not self._run_id:
            return  # the board is connecting: _open_client runs hello itself
        connection.send_command("INFO", "server")
        info = connection.read_response()
        found = _RUN_ID.search(info.decode() if isinstance(info, bytes) else str(info))
        if found is None or found.group(1) != self._run_id:
            self._hello_on(connection)

    def _hello_on(self, connection: redis.connection.AbstractConnection) -> None:
        """Run hello over one raw connection (see :mod:`jobboard.redis.durability`)."""
        raise NotImplementedError

    def _connection_uncertain(self) -> bool:
        return self._client is not None and not self._subscribed.is_set()


    def _where(self, key: str | None = None) -> Any:
        """Where the server is (host:port/db), or one connection setting."""
        given = self._given
        if key is not None:
            kwargs = given.get_connection_kwargs() if given else self._connection
            return kwargs.get(key)
        return topology.where(self._client or given, self._connection, self._prefix)

    # -- calling the server -------------------------------------------------

    def _call(self, op: str, job_id: str | None, call: Callable[[], T], *, safe: bool) -> T:
        """Run one request, translating errors; ``safe`` ones (reads, idempotent
        writes) retry connection errors until ``retry_deadline``. Others retry
        only a server that refused them while loading its data."""
        if self._client is None:
            raise errors.BoardUnavailable(f"redis board {self.namespace!r} is closed")
        what = op if job_id is None else f"{op} of job {job_id!r}"
        try:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                if not self._retryable(err, safe):
                    raise
                log.info("redis board %r: %s failed (%s); retrying", self.namespace, what, err)
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(lambda e: self._retryable(e, safe)),
                wait=tenacity.wait_random_exponential(
                    multiplier=self.RETRY_INITIAL, max=self.RETRY_MAX
                ),
                stop=tenacity.stop_after_delay(self.retry_deadline),
                reraise=True,
            ):
                with attempt:
                    return call()
            raise AssertionError("unreachable")  # pragma: no cover
        except redis.AuthenticationError as err:
            user = self._where("username") or "default"
            raise errors.BoardUnavailable(
                f"redis board {self.namespace!r} at {self._where()}: authentication failed for "
                f"user {user!r} ({err}); check the password or ACL user of the board URL"
            ) from err
        except (redis.ConnectionError, redis.TimeoutError) as err:
            outcome = "" if safe else "; whether it took effect is unknown"
            raise errors.BoardUnavailable(
                f"redis board {self.namespace!r} at {self._where()}: {what} failed, the server "
                f"is unreachable ({err}){outcome}"
            ) from err
        except topology.REFUSED_NOT_RUN as err:
            raise errors.BoardUnavailable(
                f"redis board {self.namespace!r} at {self._where()}: {what} refused, the "
                f"server is not serving the board's keys yet ({err}); try again"
            ) from err
        except redis.ResponseError as err:
            raise self._refused(what, job_id, err) from err
        except redis.RedisError as err:
            raise errors.BoardError(
                f"redis board {self.namespace!r}: {what} failed: {err}"
            ) from err

    @staticmethod
    def _retryable(err: BaseException, safe: bool) -> bool:
        if isinstance(err, topology.REFUSED_NOT_RUN):
            return True  # refused, not run: safe to send again
        return (
            safe
            and isinstance(err, redis.ConnectionError | redis.TimeoutError)
            and not isinstance(err, redis.AuthenticationError)
        )

    def _refused(
        self, what: str, job_id: str | None, err: redis.ResponseError
    ) -> errors.BoardError:
        """Translate a script's ``JB <CODE> <details>`` error reply."""
        text = str(err)
        code, _, rest = text.removeprefix("JB ").partition(" ")
        if not text.startswith("JB ") or code not in REFUSALS:
            return errors.BoardError(f"redis board {self.namespace!r}: {what} refused: {text}")
        if code == "CORRUPT":
            return errors.InvalidJob(
                f"job {job_id!r}: stored field {rest!r} is corrupt; trash it with force",
                field=rest,
                job=job_id,
            )
        cls, template = REFUSALS[code]
        return cls(template.format(job=repr(job_id), rest=rest, board=repr(self.name)))

    def _script(self, name: str, key: str, *args: Any) -> Any:
        """Run a guarded script with this client's knowledge of the board; a
        ``RECHECK`` answer (the server restarted, or the epoch moved) runs
        :meth:`_hello` and the script again."""
        script = self._scripts[name]
        for _ in range(3):
            try:
                reply = script(
                    keys=[key],
                    args=[self._prefix, *args, self._run_id, self._epoch, self._check_run],
                )
            except redis.ResponseError as err:
                message = str(err)
                if message.startswith("JB RECHECK"):
                    self._hello()
                    continue
                if message.startswith("JB HALTED"):
                    self._halt(message.removeprefix("JB HALTED").strip())
                raise
            gen = int(reply[0])
            if gen > self._gen:
                self._gen = gen
            return reply[1] if len(reply) > 1 else None
        raise errors.BoardUnavailable(
            f"redis board {self.namespace!r} at {self._where()}: the board kept changing "
            f"while {name} checked it; try again"
        )

    def _hello(self) -> None:
        """Check the board's marker (see :mod:`jobboard.redis.durability`)."""
        raise NotImplementedError

    def _halt(self, reason: str) -> None:
        """Refuse to work (see :mod:`jobboard.redis.durability`)."""
        raise NotImplementedError

    def _redis(self) -> redis.Redis:
        """The open client; ``BoardUnavailable`` once the board is closed."""
        client = self._client
        if client is None:
            raise errors.BoardUnavailable(f"redis board {self.namespace!r} is closed")
        return client

    def _pipeline(self) -> redis.client.Pipeline:
        pipe: redis.client.Pipeline = topology.pipeline(self._redis(), f"{self._prefix}seq")
        return pipe

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}job:{job_id}"
