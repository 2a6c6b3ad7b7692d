"""Real servers for integration tests, on free loopback ports.

Each server runs from its own temporary directory and can be killed, paused
(SIGSTOP/SIGCONT) and restarted, so chaos tests can inject faults. Where no
binary is installed but a Docker engine is reachable, testcontainers is used.
When ``CI`` is set a missing server fails the run; on a developer machine the
tests that need it are skipped with a loud reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now (never a default port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def missing_server(what: str) -> None:
    """Fail in CI, skip loudly elsewhere."""
    message = f"{what} is not available: install it (make test does) or set its URL variable"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


def docker_available() -> bool:
    """True when a Docker engine answers (testcontainers can then start servers)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ServerProcess:
    """A server binary run as a child process with fault-injection helpers."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"conductor-{self.name}-"))
        self.log_path = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start within {timeout}s:\n{self.logs()}")
            time.sleep(0.05)

    def logs(self, tail: int = 60) -> str:
        """The last lines of the server's log (printed when a test fails)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and reap it."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM the server and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, *, hard: bool = False) -> None:
        """Kill (or stop) and start again on the same port and data directory."""
        self.kill() if hard else self.stop()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(ServerProcess):
    """``redis-server`` on a free loopback port; ``persistent`` turns on AOF
    (``appendfsync`` always unless told), ``save`` sets RDB snapshot points
    (none by default; ``DEFAULT_SAVE`` is the server's own default), ``config``
    adds directives (``{"maxmemory-policy": "allkeys-lru"}``), ``password`` sets
    ``requirepass``, ``tls`` serves TLS only (a throwaway CA made with the
    ``openssl`` command; see :meth:`tls_available`)."""

    name = "redis"
    #: redis-server's own snapshot points when it is given no ``save``.
    DEFAULT_SAVE = "3600 1 300 100 60 10000"

    def __init__(
        self,
        persistent: bool = False,
        password: str | None = None,
        tls: bool = False,
        *,
        appendfsync: str = "always",
        save: str = "",
        config: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.persistent = persistent
        self.password = password
        self.tls = tls
        self.appendfsync = appendfsync
        self.save = save
        self.config = dict(config or {})
        if tls:
            self._make_certificates()

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )

    @staticmethod
    def tls_available() -> bool:
        """True when the openssl command (to make certificates) and redis-server are installed."""
        return shutil.which("openssl") is not None and RedisServer.binary() is not None

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def _make_certificates(self) -> None:
        """A CA and a server certificate for 127.0.0.1, valid for one day."""
        (self.dir / "san.cnf").write_text(f"subjectAltName=IP:{LOOPBACK}\n")
        steps = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=conductor-test-ca", "-keyout", "ca.key", "-out", "ca.crt"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={LOOPBACK}",
             "-keyout", "server.key", "-out", "server.csr"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.crt"],
        ]  # fmt: skip
        for step in steps:
            subprocess.run(["openssl", *step], cwd=self.dir, check=True, capture_output=True)

    def command(self) -> list[str]:
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port)]
            ports += ["--tls-cert-file", str(self.dir / "server.crt")]
            ports += ["--tls-key-file", str(self.dir / "server.key")]
            ports += ["--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no"]
        else:
            ports = ["--port", str(self.port)]
        cmd = [
            self.binary() or "redis-server",
            *ports,
            "--bind",
            LOOPBACK,
            "--dir",
            str(self.dir),
            "--save",
            self.save,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        if self.persistent:
            cmd += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            cmd += ["--appendonly", "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        for key, value in self.config.items():
            cmd += [f"--{key}", value]
        return cmd

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{LOOPBACK}:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"


ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
#: Logging binding for ZooKeeper's slf4j (the Debian package ships several).
SLF4J_BINDING = Path("/usr/share/java/slf4j-simple.jar")


def four_letter_word(port: int, word: str = "ruok", host: str = LOOPBACK) -> str:
    """Send one of ZooKeeper's four-letter admin commands; '' when nobody answers."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(word.encode())
            sock.settimeout(0.5)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


class ZooKeeperServer(ServerProcess):
    """A standalone ZooKeeper (Debian's jars run with ``java``) on a free loopback port.

    Its data directory lives in the server's temporary directory, so a kill -9
    and :meth:`restart` keep every persistent znode (and the sessions that
    have not timed out yet). ``tick_time`` is small so that tests may use
    session timeouts of one to a few seconds.
    """

    name = "zookeeper"

    def __init__(self, tick_time: int = 500, max_session_timeout: int = 30_000) -> None:
        super().__init__()
        self.tick_time = tick_time
        self.max_session_timeout = max_session_timeout

    @staticmethod
    def binary() -> str | None:
        """The ``java`` that can run the installed ZooKeeper, or None."""
        java = shutil.which("java") or ("/usr/bin/java" if os.path.exists("/usr/bin/java") else None)
        return java if java and ZOOKEEPER_JAR.exists() else None

    def classpath(self) -> str:
        # zookeeper.jar's manifest names its dependencies; add a logging binding.
        jars = [ZOOKEEPER_JAR] + ([SLF4J_BINDING] if SLF4J_BINDING.exists() else [])
        return ":".join(str(jar) for jar in jars)

    def write_config(self) -> Path:
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        config = self.dir / "zoo.cfg"
        config.write_text(
            "\n".join(
                [
                    f"tickTime={self.tick_time}",
                    f"dataDir={data}",
                    f"clientPort={self.port}",
                    f"clientPortAddress={LOOPBACK}",
                    "admin.enableServer=false",
                    f"minSessionTimeout={2 * self.tick_time}",
                    f"maxSessionTimeout={self.max_session_timeout}",
                    "4lw.commands.whitelist=ruok,srvr,stat,cons,mntr",
                    "autopurge.purgeInterval=0",
                    "",
                ]
            )
        )
        return config

    def command(self) -> list[str]:
        config = self.write_config()
        return [
            self.binary() or "java",
            "-Xmx192m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            self.classpath(),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(config),
        ]

    def ready(self) -> bool:
        # ``ruok`` answers before the server serves; ``srvr`` reports a mode only then.
        return "Mode:" in four_letter_word(self.port, "srvr")

    @property
    def hosts(self) -> str:
        """The connection string for kazoo: ``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.port}"
