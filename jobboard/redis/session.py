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
import os
import re
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, ClassVar, TypeVar

import redis
import tenacity
from hiredis import pack_command
from redis.commands.core import Script

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
    "consume_next",
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
#: Scripts made of others: (local function, script whose body it runs), put before theirs.
_STEPS = {"consume_next": (("claim_step", "claim_next"), ("finish_step", "finish"))}
#: The server run's id in an INFO reply.
_RUN_ID = re.compile(r"run_id:([0-9a-f]+)")
#: Connections the board's own client keeps checked out for its scripts.
_SPARE_CONNECTIONS = 4
#: Scripts run without the guard (they are how a client checks the board).
_UNGUARDED = frozenset({"hello", "reset", "set_pause", "observe"})
#: Scripts that skip reading the marker when the client checks each connection it
#: opens (``_on_connection``): their fence alone refuses a write under a claim that
#: a halt or a reset voided, since both end every claim (``void_claims``).
_UNREAD_OK = frozenset({"save_progress"})

#: Around every other script: take off the client's known run and epoch and
#: whether the server's run id must be read here, check them (``guard``; a script
#: of ``_UNREAD_OK`` skips it when the run id need not be read), run the script's
#: body, write what it changed in the board's marker (one HSET: gen, counters,
#: bounds), reply ``{gen, reply}``.
_GUARD_HEAD = """
-- '1': read the run id too; '0': a script of _UNREAD_OK skips the marker; '2': it reads it
local MODE = table.remove(ARGV)
local CHECK_RUN = MODE == '1'
local KNOWN_EPOCH = tonumber(table.remove(ARGV))
local KNOWN_RUN = table.remove(ARGV)
local refusal
if UNREAD_OK and MODE == '0' then
  EPOCH = KNOWN_EPOCH
else
  refusal = guard(ARGV[1], KNOWN_RUN, KNOWN_EPOCH, CHECK_RUN)
end
if refusal then
  return refusal
end
local function body()
"""
_GUARD_TAIL = """
end
local ok, reply = pcall(body)
flush_marker(ARGV[1])  -- even after an error: what the script changed is counted
if not ok then
  error(reply, 0)
end
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
    for step, part in _STEPS.get(name, ()):
        body = f"local function {step}()\n{(folder / f'{part}.lua').read_text()}\nend\n{body}"
    if name in _UNGUARDED:
        return lib + "\n" + body
    unread = f"\nlocal UNREAD_OK = {'true' if name in _UNREAD_OK else 'false'}"
    return lib + unread + _GUARD_HEAD + body + _GUARD_TAIL


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
    _direct_pool: redis.ConnectionPool | None
    _spare: list[Any]
    _spare_pid: int
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
        # The board's own plain client (not a Cluster's, nor one given) runs its
        # scripts over its pool directly (_evalsha).
        self._direct_pool = (
            client.connection_pool
            if self._given is None and on_connect is not None and isinstance(client, redis.Redis)
            else None
        )
        self._spare, self._spare_pid = [], os.getpid()
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

    def _script(self, name: str, key: str, *args: Any, read_marker: bool = False) -> Any:
        """Run a guarded script with this client's knowledge of the board; a
        ``RECHECK`` answer (the server restarted, or the epoch moved) runs
        :meth:`_hello` and the script again. ``read_marker``: a script that may skip
        the marker (``_UNREAD_OK``) reads it this time."""
        script = self._scripts[name]
        pool = self._direct_pool
        for _ in range(3):
            try:
                mode = "2" if read_marker and self._check_run == "0" else self._check_run
                tail = (self._run_id, self._epoch, mode)
                if pool is not None and isinstance(script, Script):
                    reply = self._evalsha(pool, script, key, (self._prefix, *args, *tail))
                else:
                    reply = script(keys=[key], args=[self._prefix, *args, *tail])
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

    def _evalsha(
        self, pool: redis.ConnectionPool, script: Any, key: str, args: tuple[Any, ...]
    ) -> Any:
        """One EVALSHA straight over a connection of the board's own client: what
        ``Script.__call__`` does for a client that never resends (see
        ``topology.make_client``), without its layers and the pool's bookkeeping,
        which cost more CPU than the request itself. A few connections stay
        checked out for this (``_spare``); the client's ``close`` closes them."""
        spare = self._spare
        if self._spare_pid != os.getpid():  # a forked child never shares a parent's socket
            spare.clear()
            self._spare_pid = os.getpid()
        try:
            connection = spare.pop()
        except IndexError:
            connection = pool.get_connection()
        else:
            # As the pool checks a connection it hands out: one the server closed (a
            # restart) or with unread data is opened afresh before anything is sent,
            # so that a write is never lost on a dead socket.
            try:
                if connection.can_read():
                    connection.disconnect()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                connection.disconnect()
        try:
            connection.send_packed_command([pack_command(("EVALSHA", script.sha, 1, key, *args))])
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                # A restarted or flushed server forgot the script: load it and send
                # again (a refused call did not run, so sending it again is safe).
                connection.send_command("SCRIPT", "LOAD", script.script)
                sha = connection.read_response()
                script.sha = sha.decode() if isinstance(sha, bytes) else sha
                connection.send_command("EVALSHA", script.sha, 1, key, *args)
                return connection.read_response()
        except redis.ResponseError:
            raise  # the error reply was read whole: the connection is clean
        except BaseException:
            connection.disconnect()  # a reply may still be on its way: never reuse it as is
            raise
        finally:
            if len(spare) < _SPARE_CONNECTIONS:
                spare.append(connection)
            else:
                pool.release(connection)

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
