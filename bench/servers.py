"""Private servers for the bench and the counters read from them.

Redis and ZooKeeper are started on free loopback ports with the test
helpers of ``tests/servers.py`` (never a shared or default-port server);
SQLite boards are files in a temporary directory. Counters:

* Redis: ``INFO commandstats`` (every command, those run inside scripts
  included) and a ``MONITOR`` tap that tells client commands (round trips)
  from commands run by scripts, per client address;
* ZooKeeper: the ``cons`` four-letter word, packets received and sent per
  client connection.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

from tests.servers import RedisServer, ZooKeeperServer

BACKENDS = ("redis", "zookeeper", "sqlite")


class BenchZooKeeper(ZooKeeperServer):
    """The test ZooKeeper with a larger heap, also answering ``envi`` (TaskFlow checks the
    server version with it)."""

    def write_config(self) -> Path:
        config = super().write_config()
        text = config.read_text().replace("4lw.commands.whitelist=", "4lw.commands.whitelist=envi,")
        config.write_text(text)
        return config

    def command(self) -> list[str]:
        # 100,000 waiting jobs need more heap than the tests' 192 MB.
        return ["-Xmx1g" if arg.startswith("-Xmx") else arg for arg in super().command()]


class Servers:
    """The servers one bench run needs, started lazily and stopped together."""

    def __init__(self, zk_tick_ms: int = 100) -> None:
        self.redis: RedisServer | None = None
        self.zookeeper: BenchZooKeeper | None = None
        #: ZooKeeper's tickTime: a dead session's nodes go at the first tick after
        #: its timeout, so failover takes up to one tick more than the session.
        self.zk_tick_ms = zk_tick_ms
        self.tmp = Path(tempfile.mkdtemp(prefix="conductor-bench-"))

    def start(self, backends: tuple[str, ...]) -> None:
        """Start the servers the given backends need (Redis, ZooKeeper)."""
        if "redis" in backends and self.redis is None:
            if RedisServer.binary() is None:
                raise SystemExit("bench: redis-server is not installed (make system installs it)")
            self.redis = RedisServer()
            self.redis.start()
        if "zookeeper" in backends and self.zookeeper is None:
            if ZooKeeperServer.binary() is None:
                raise SystemExit("bench: ZooKeeper (java + zookeeper.jar) is not installed")
            self.zookeeper = BenchZooKeeper(tick_time=self.zk_tick_ms, max_session_timeout=60_000)
            self.zookeeper.start(timeout=60)

    def url(self, backend: str, *, session_timeout: float = 4.0, **options: object) -> str:
        """A board URL on a fresh namespace (or a fresh SQLite file) of this run's servers."""
        ns = f"bench-{uuid.uuid4().hex[:10]}"
        query = "&".join(f"{k}={v}" for k, v in options.items() if v is not None)
        query = f"&{query}" if query else ""
        if backend == "redis":
            assert self.redis is not None
            return f"{self.redis.url}?namespace={ns}{query}"
        if backend == "zookeeper":
            assert self.zookeeper is not None
            return (
                f"zookeeper://{self.zookeeper.hosts}/bench?namespace={ns}"
                f"&session_timeout={session_timeout}{query}"
            )
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / (ns + '.db')}?namespace={ns}{query}"
        raise ValueError(f"unknown backend {backend!r}")

    def stop(self) -> None:
        """Kill the servers and remove their files."""
        for server in (self.redis, self.zookeeper):
            if server is not None:
                server.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


def redis_command_total(port: int) -> int:
    """Every command the server has run (``INFO commandstats`` calls, scripts' inner
    commands included), less the ``INFO`` calls themselves."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if not k.removeprefix("cmdstat_").startswith("info")
    )


_MONITOR_LINE = re.compile(rb"^\+([0-9.]+) \[\d+ ([^\]]+)\]")

#: Commands of one client closer together than this (seconds) came in one pipeline.
PIPELINE_GAP = 25e-6


class RedisMonitor:
    """Counts commands with ``MONITOR`` while open: per client address, and those
    run inside scripts (``lua``). Costly for the server: only for low-load figures.

    Round trips are estimated per client: commands of one pipeline reach the
    server back to back (a few microseconds apart), while a client's next
    request comes a network round trip later; a gap over ``PIPELINE_GAP`` (or
    another client in between) starts a new round trip.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.by_client: Counter[str] = Counter()
        self.trips_by_client: Counter[str] = Counter()
        self.in_scripts = 0
        self._last: tuple[str, float] = ("", 0.0)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> RedisMonitor:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            with self._lock:
                for line in lines:
                    self._count(line)

    def _count(self, line: bytes) -> None:
        match = _MONITOR_LINE.match(line)
        if match is None:
            return
        stamp, who = float(match.group(1)), match.group(2).decode()
        if who == "lua":
            self.in_scripts += 1
            return
        self.by_client[who] += 1
        last_who, last_stamp = self._last
        if who != last_who or stamp - last_stamp > PIPELINE_GAP:
            self.trips_by_client[who] += 1
        self._last = (who, stamp)

    def snapshot(self) -> tuple[Counter[str], Counter[str], int]:
        """(client commands by address, round trips by address, commands run inside
        scripts) so far."""
        with self._lock:
            return Counter(self.by_client), Counter(self.trips_by_client), self.in_scripts

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()


def redis_clients(port: int) -> set[str]:
    """Addresses (``ip:port``) of the clients connected right now."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return {c["addr"] for c in client.client_list()}
    finally:
        client.close()
