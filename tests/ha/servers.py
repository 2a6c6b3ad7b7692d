"""Highly available server groups on loopback for the failover tests.

* :class:`SentinelGroup`: a Redis master, one replica and three sentinels
  (``redis-server --sentinel``), with passwords on the data servers and on
  the sentinels, so both sets of credentials are exercised;
* :class:`RedisClusterGroup`: three masters and one replica each, joined with
  ``redis-cli --cluster create``;
* :class:`ZooKeeperEnsemble`: three ZooKeeper servers in one quorum.

Every server runs on free loopback ports from its own temporary directory,
with timeouts small enough that a failover takes a few seconds. Each group
can name its current leader (master) and kill it with SIGKILL.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import redis

from tests.servers import LOOPBACK, RedisServer, ZooKeeperServer, four_letter_word, free_port

#: How long a sentinel or cluster node waits before calling a silent master down (ms).
DOWN_AFTER_MS = 1000
SERVICE = "conductor-ha"


def _wait(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it is truthy (server set-up, not a test assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


class RedisNode(RedisServer):
    """A ``redis-server`` with extra configuration lines (replica, cluster, sentinel)."""

    def __init__(self, extra: list[str] | None = None, password: str | None = None) -> None:
        super().__init__(password=password)
        self.extra = list(extra or [])

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(
            host=LOOPBACK, port=self.port, password=self.password, socket_timeout=2, **kwargs
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def offset(self) -> int:
        """The replication offset this server has reached."""
        info = self.client().info("replication")
        return int(info.get("slave_repl_offset") or info.get("master_repl_offset") or 0)


def wait_replicated(master: RedisNode, replicas: list[RedisNode], timeout: float = 10) -> None:
    """Wait until every replica has every write the master had when called."""
    target = master.offset()
    _wait(lambda: all(r.offset() >= target for r in replicas), timeout, "replication")


class SentinelNode(RedisNode):
    """``redis-server sentinel.conf --sentinel``: one sentinel watching the master."""

    name = "sentinel"

    def __init__(self, master_port: int, master_password: str, password: str) -> None:
        super().__init__(password=password)
        self.master_port = master_port
        self.master_password = master_password

    def command(self) -> list[str]:
        config = self.dir / "sentinel.conf"  # sentinels rewrite their own file
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {LOOPBACK}",
                    f"dir {self.dir}",
                    "loglevel notice",
                    f"requirepass {self.password}",
                    f"sentinel sentinel-pass {self.password}",
                    f"sentinel monitor {SERVICE} {LOOPBACK} {self.master_port} 2",
                    f"sentinel auth-pass {SERVICE} {self.master_password}",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} 3000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        return [self.binary() or "redis-server", str(config), "--sentinel"]


class SentinelGroup:
    """A master, a replica and three sentinels, all password protected."""

    MASTER_PASSWORD = "master-secret-1"
    SENTINEL_PASSWORD = "sentinel-secret-2"

    def __init__(self) -> None:
        pw = self.MASTER_PASSWORD
        self.master = RedisNode(["--masterauth", pw], password=pw)
        self.replica = RedisNode(
            ["--masterauth", pw, "--replicaof", LOOPBACK, str(self.master.port)], password=pw
        )
        self.sentinels = [
            SentinelNode(self.master.port, pw, self.SENTINEL_PASSWORD) for _ in range(3)
        ]
        self.servers: list[RedisNode] = [self.master, self.replica, *self.sentinels]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        _wait(self._replica_synced, 30, "replica")
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(self._sentinels_agree, 30, "sentinels")

    def _replica_synced(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(SERVICE)
            if state.get("num-other-sentinels", 0) < 2 or state.get("num-slaves", 0) < 1:
                return False
        return True

    def url(self, namespace: str, **options: object) -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        query = "&".join(f"{k}={v}" for k, v in {"namespace": namespace, **options}.items())
        return (
            f"redis+sentinel://:{self.MASTER_PASSWORD}@{hosts}/{SERVICE}/0"
            f"?sentinel_password={self.SENTINEL_PASSWORD}&{query}"
        )

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers tells it."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            try:
                address = sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def node_at(self, port: int) -> RedisNode:
        return next(n for n in (self.master, self.replica) if n.port == port)

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} :{s.port} ---\n{s.logs(30)}" for s in self.servers)

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


class RedisClusterGroup:
    """Three masters with one replica each, on free loopback ports."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        options = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(DOWN_AFTER_MS),
            "--cluster-replica-validity-factor", "0",  # a replica may always take over
        ]  # fmt: skip
        # The cluster bus port is given: the default (port + 10000) may not exist.
        self.nodes = [RedisNode(options) for _ in range(masters * (1 + replicas))]
        taken = {node.port for node in self.nodes}
        assert len(taken) == len(self.nodes), "free_port gave one port twice"
        for node in self.nodes:
            bus = free_port()
            while bus in taken:
                bus = free_port()
            taken.add(bus)
            node.extra += ["--cluster-port", str(bus)]
        self.replicas = replicas

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"{LOOPBACK}:{n.port}" for n in self.nodes]
        cli = shutil.which("redis-cli") or "redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait(self._healthy, 30, "cluster")

    def _healthy(self) -> bool:
        roles = []
        for node in self.nodes:
            info = node.client().cluster("info")
            if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != len(
                self.nodes
            ):
                return False
            replication = node.client().info("replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
            roles.append(replication.get("role"))
        return roles.count("slave") == len(self.nodes) - len(self.nodes) // (1 + self.replicas)

    def client(self) -> redis.Redis:
        node = next(n for n in self.nodes if n.alive())
        return node.client()

    def url(self, namespace: str, **options: object) -> str:
        hosts = ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:2])
        query = "&".join(f"{k}={v}" for k, v in {"namespace": namespace, **options}.items())
        return f"redis+cluster://{hosts}/?{query}"

    def owner_of(self, key: str) -> RedisNode:
        """The live master serving ``key``'s slot, as the cluster tells it now."""
        slot = self.client().cluster("keyslot", key)
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                info = node.client().info("replication")
            except redis.RedisError:
                continue
            if info.get("role") != "master":
                continue
            for start, end in self._slot_ranges(node):
                if start <= slot <= end:
                    return node
        raise LookupError(f"no live master serves slot {slot}")

    def _slot_ranges(self, node: RedisNode) -> list[tuple[int, int]]:
        """The slot ranges ``node`` serves, as it says itself."""
        nodes = node.client().execute_command("CLUSTER NODES")
        myself = next(v for v in nodes.values() if "myself" in v["flags"])
        return [(int(r[0]), int(r[-1])) for r in myself["slots"]]

    def replicas_of(self, master: RedisNode) -> list[RedisNode]:
        """The live replicas of ``master``, as they say themselves."""
        out = []
        for node in self.nodes:
            if node is master or not node.alive():
                continue
            info = node.client().info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                out.append(node)
        return out

    def masters(self) -> list[RedisNode]:
        return [
            n for n in self.nodes
            if n.alive() and n.client().info("replication").get("role") == "master"
        ]  # fmt: skip

    def logs(self) -> str:
        return "\n".join(f"--- node :{n.port} ---\n{n.logs(20)}" for n in self.nodes)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class EnsembleNode(ZooKeeperServer):
    """One member of a ZooKeeper ensemble."""

    name = "zookeeper-ensemble"

    def __init__(self, myid: int, tick_time: int = 250) -> None:
        super().__init__(tick_time=tick_time)
        self.myid = myid
        self.quorum_port = free_port()
        self.election_port = free_port()
        self.members: list[EnsembleNode] = []

    def write_config(self) -> Path:
        config = super().write_config()
        (self.dir / "data" / "myid").write_text(f"{self.myid}\n")
        lines = config.read_text().replace(
            "4lw.commands.whitelist=ruok,srvr,stat,cons",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr",
        )
        lines += "".join(
            f"server.{m.myid}={LOOPBACK}:{m.quorum_port}:{m.election_port}\n" for m in self.members
        )
        lines += "initLimit=20\nsyncLimit=4\n"
        config.write_text(lines)
        return config

    def mode(self) -> str:
        """``leader``, ``follower`` or '' (not serving), from the ``srvr`` command."""
        for line in four_letter_word(self.port, "srvr").splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ZooKeeperEnsemble:
    """Three ZooKeeper servers forming one quorum."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [EnsembleNode(i + 1) for i in range(size)]
        for node in self.nodes:
            node.members = self.nodes

    def start(self) -> None:
        # Each member is ready only once a quorum exists: start them together.
        failures: list[BaseException] = []

        def start(node: EnsembleNode) -> None:
            try:
                node.start(timeout=60)
            except BaseException as err:  # noqa: BLE001 - reported below
                failures.append(err)

        threads = [threading.Thread(target=start, args=(n,)) for n in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    @property
    def hosts(self) -> str:
        return ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes)

    def leader(self) -> EnsembleNode | None:
        return next((n for n in self.nodes if n.alive() and n.mode() == "leader"), None)

    def logs(self) -> str:
        return "\n".join(f"--- zk {n.myid} :{n.port} ---\n{n.logs(30)}" for n in self.nodes)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
