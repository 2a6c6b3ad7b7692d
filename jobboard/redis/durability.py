"""What the Redis board does about a server that loses data.

A Redis server keeps what the board stored only as well as its persistence
settings allow: a restart after ``kill -9`` comes back with the last RDB
snapshot (or nothing at all without persistence), a failover to a replica
with what had been replicated, and eviction drops keys under memory
pressure. Tokens kept in the lost data would then be issued again, and
finished jobs would run again. This layer makes that loud instead:

* at connect it reads the server's persistence and eviction settings and
  warns about (or, with ``persistence=require`` / ``eviction=require``,
  refuses) a server that may lose acknowledged writes;
* the board keeps a marker (``P board``: the server run its data set was
  last checked on, an epoch, and ``gen``, one more for every change); each
  client remembers the run, the epoch and the highest ``gen`` it saw. Every
  script first checks the marker against the server's run id and the
  client's knowledge (``guard`` in ``lua/_lib.lua``) and sends the client to
  :meth:`RedisDurability._hello` after a restart; hello halts the board when
  this client saw changes that the restarted data set lacks. A halted board
  refuses every script (``BoardRegressed``), reports itself not connected
  (so a conductor's health check is red) and logs at CRITICAL, until an
  operator calls :meth:`RedisDurability.reset_after_data_loss`, which starts
  a new epoch: tokens are ``epoch * 2**32 + count``, so every later token
  beats every earlier one, and every claim from before is void.

What cannot be detected: a data set lost while no client that saw it is
running (a new client takes an empty server for a new board). Use AOF with
``appendfsync always`` where that matters; see ``docs/redis.md``.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import redis

from jobboard import errors
from jobboard.redis.decoding import text
from jobboard.redis.session import RedisSession, log

__all__ = ["POLICIES", "RedisDurability"]

#: Values of the ``persistence`` and ``eviction`` options.
POLICIES = ("require", "warn", "ignore")

#: What each persistence setting may lose when the server dies.
LOSS_WINDOWS = {
    "aof-always": "nothing acknowledged (each write is fsynced before its reply)",
    "aof-everysec": "about the last second of writes",
    "aof-no": "the writes the operating system had not flushed (up to ~30 s)",
    "rdb": "every write since the last snapshot",
    "none": "everything: the data set lives in memory only",
    "unknown": "unknown: the server's settings could not be read",
}


class RedisDurability(RedisSession):
    """The board's marker, the client's memory of it, and the server's settings."""

    #: Server runs remembered in ``P runs``.
    RUNS_KEPT: ClassVar[int] = 100
    #: Seconds without claims after a restart of a server that may lose writes,
    #: so that every running client checks in first (its event link reconnects
    #: within LISTEN_BACKOFF_MAX); none when the server fsyncs every write.
    RESTART_SETTLE: ClassVar[float] = 6.0

    persistence: str
    eviction: str
    _run_id: str
    _epoch: int
    _gen: int
    _halted: str | None
    _hello_lock: threading.RLock
    _server: dict[str, Any]

    @property
    def connected(self) -> bool:
        """False when closed, and while the board refuses to work (data loss)."""
        return self._client is not None and self._halted is None

    @property
    def halted(self) -> str | None:
        """Why the board refuses to work (its data set went backwards), or None."""
        return self._halted

    @property
    def health_warnings(self) -> list[str]:
        """What is unsafe about the server (persistence, eviction), for health checks."""
        return list(self._server.get("warnings") or ())

    # -- the marker -----------------------------------------------------------

    def _hello(self) -> None:
        """Check the board's data set against what this client saw (one script call);
        ``BoardRegressed`` when it went backwards."""
        self._redis()  # BoardUnavailable once the board is closed
        with self._hello_lock:
            self._hello_done(
                self._scripts["hello"](keys=[f"{self._prefix}board"], args=self._hello_args())
            )

    def _hello_on(self, connection: redis.connection.AbstractConnection) -> None:
        """Hello over a new connection that met another server run (see
        ``RedisSession._on_connection``). A halt is recorded and logged; the
        request that opened the connection then meets it in the guard."""
        script = self._scripts["hello"]
        with self._hello_lock:
            connection.send_command(
                "EVAL", script.script, 1, f"{self._prefix}board", *self._hello_args()
            )
            try:
                self._hello_done(connection.read_response())
            except errors.BoardRegressed:
                pass

    def _hello_args(self) -> list[Any]:
        return [
            self._prefix,
            self._run_id,
            self._epoch,
            self._gen,
            self.RUNS_KEPT,
            0 if self._server.get("persistence") == "aof-always" else self.RESTART_SETTLE,
        ]

    def _hello_done(self, reply: list[Any]) -> None:
        """Take in hello's answer (the caller holds the hello lock)."""
        status = text(reply[0])
        if status == "halted":
            self._halt(text(reply[1]))
        run, epoch, gen = text(reply[1]), int(reply[2]), int(reply[3])
        if status == "reset" and self._run_id:
            log.warning(
                "redis board %r: reset by an operator (epoch %d); claims made before are void",
                self.namespace,
                epoch,
            )
            self._void_claims()
        elif self._run_id and run != self._run_id:
            log.info(
                "redis board %r: server restarted (run %s); nothing this client saw was lost",
                self.namespace,
                run[:8],
            )
        if self._halted is not None:
            log.warning("redis board %r works again", self.namespace)
        self._run_id, self._epoch, self._gen, self._halted = run, epoch, gen, None

    def _halt(self, reason: str) -> None:
        """Record that the board refuses to work, void our claims, say it loudly, raise."""
        first = self._halted is None
        self._halted = reason
        self._void_claims()
        if first:
            log.critical(
                "redis board %r at %s REFUSES TO WORK: %s. Check what was lost, then reset "
                "it (RedisBoard.reset_after_data_loss())",
                self.namespace,
                self._where(),
                reason,
            )
        raise errors.BoardRegressed(
            f"redis board {self.namespace!r} at {self._where()} refuses to work: {reason}; "
            "an operator must check what was lost and reset it"
        )

    def _void_claims(self) -> None:
        """Mark every claim we hold lost: its token may have been issued again."""
        with self._local_lock:
            for job_id in list(self._held):
                self._lose(job_id)

    def reset_after_data_loss(self) -> int:
        """Let a halted board work again, in a new epoch; returns the epoch.

        For an operator who has checked what the server lost (jobs consumed
        again, progress, posts). Every token issued from now on is greater
        than every token issued before, and every claim from before is void.
        """

        def reset() -> list[Any]:
            answer: list[Any] = self._scripts["reset"](
                keys=[f"{self._prefix}board"], args=[self._prefix, self._epoch]
            )
            return answer

        run, epoch, gen = self._call("reset", None, reset, safe=True)
        with self._hello_lock:
            if self._run_id:
                self._void_claims()
            self._run_id, self._epoch, self._gen = text(run), int(epoch), int(gen)
            self._halted = None
        log.warning("redis board %r: reset after data loss; epoch %d", self.namespace, epoch)
        return int(epoch)

    # -- the server's settings -------------------------------------------------

    def _check_server(self, client: redis.Redis) -> None:
        """Read persistence and eviction settings; warn or refuse per the options."""
        self._server = server = self._read_server(client)
        problems = []
        if server["persistence"] != "aof-always":
            problems.append(
                (
                    "persistence",
                    self.persistence,
                    f"persistence is {server['persistence']}: a crash loses "
                    f"{LOSS_WINDOWS[server['persistence']]}",
                )
            )
        if server["eviction"] != "noeviction":
            problems.append(
                (
                    "eviction",
                    self.eviction,
                    f"maxmemory-policy is {server['eviction'] or 'unknown'}: under memory "
                    "pressure the server may delete jobs without a word (noeviction is the "
                    "only safe policy)",
                )
            )
        server["warnings"] = [message for _, policy, message in problems if policy != "ignore"]
        for option, policy, message in problems:
            if policy == "require":
                raise errors.BoardUnavailable(
                    f"redis board {self.namespace!r} at {self._where()}: refusing the server "
                    f"({option}=require): {message}"
                )
            if policy == "warn":
                log.warning(
                    "redis board %r at %s: %s (set %s=ignore to silence, %s=require to refuse)",
                    self.namespace,
                    self._where(),
                    message,
                    option,
                    option,
                )

    @staticmethod
    def _read_server(client: redis.Redis) -> dict[str, Any]:
        """Persistence and eviction settings (``unknown`` when CONFIG is refused)."""
        try:
            config = client.config_get(
                "appendonly", "appendfsync", "save", "maxmemory-policy", "maxmemory"
            )
        except redis.ResponseError as err:  # NOPERM, or CONFIG renamed away
            return {"persistence": "unknown", "eviction": None, "checked": False, "error": str(err)}
        config = {text(k): text(v) for k, v in config.items() if k is not None and v is not None}
        if config.get("appendonly") == "yes":
            persistence = f"aof-{config.get('appendfsync', 'everysec')}"
        elif (config.get("save") or "").strip():
            persistence = "rdb"
        else:
            persistence = "none"
        return {
            "persistence": persistence,
            "eviction": config.get("maxmemory-policy"),
            "maxmemory": int(config.get("maxmemory") or 0),
            "checked": True,
        }

    def server_info(self) -> dict[str, Any]:
        """The server as this board sees it: persistence and what a crash may lose,
        eviction policy, the board's epoch and whether it refuses to work."""
        client = self._client
        server = dict(self._server)
        if client is not None:
            try:
                server.update(self._read_server(client))
            except redis.RedisError:
                pass  # keep what connect() saw
        server["loss_window"] = LOSS_WINDOWS.get(server.get("persistence", "unknown"))
        server.update(address=self._where(), epoch=self._epoch, halted=self._halted)
        return server
