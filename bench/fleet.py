"""A fleet of ``conductor run`` processes on one board, as an operator would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import total_cpu, wait_until
from jobboard import JobBoard

ROOT = Path(__file__).resolve().parent.parent
FLOWS_MODULE = "bench.flows"


def compile_project() -> None:
    """Byte-compile the project's packages, as an installed copy is: otherwise, with
    ``PYTHONDONTWRITEBYTECODE`` set or in a fresh checkout, every conductor the
    bench starts compiles every module it imports (0.1-0.3 s of CPU per start)."""
    import compileall

    for package in ("conductor", "jobboard", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)


def child_env() -> dict[str, str]:
    """The environment of conductor processes: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class Fleet:
    """Conductor processes named ``<prefix><n>``, started and stopped by the bench."""

    def __init__(
        self, board: JobBoard, url: str, *, lease: float | None = None, prefix: str = "c"
    ) -> None:
        self.board = board
        self.url = url
        self.lease = lease
        self.prefix = prefix
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self._count = 0

    def spawn(self) -> str:
        """Start one more conductor (without waiting for it); returns its name."""
        name = f"{self.prefix}{self._count}"
        self._count += 1
        cmd = [
            sys.executable, "-m", "conductor", "run", "--board", self.url,
            "--flows", FLOWS_MODULE, "--name", name, "--log-level", "ERROR",
            "--drain-timeout", "5",
        ]  # fmt: skip
        if self.lease is not None:
            cmd += ["--lease", str(self.lease)]
        self.started_at[name] = time.monotonic()
        self.procs[name] = subprocess.Popen(
            cmd, env=child_env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        return name

    def registered(self) -> set[str]:
        """Names of this fleet's conductors that the board lists as entities."""
        names = {e.name.split("@", 1)[0] for e in self.board.iter_entities()}
        return names & set(self.alive())

    def start(self, count: int, timeout: float = 120.0) -> list[str]:
        """Start ``count`` conductors and wait until all are registered on the board."""
        names = [self.spawn() for _ in range(count)]
        wait_until(
            lambda: set(names) <= self.registered(),
            timeout,
            interval=0.05,
            what=f"{count} conductors registered",
        )
        return names

    def alive(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is None]

    @property
    def pids(self) -> list[int]:
        return [self.procs[name].pid for name in self.alive()]

    def pid_of(self, name: str) -> int:
        return self.procs[name].pid

    def cpu(self) -> float:
        """CPU seconds used so far by the live conductors."""
        return total_cpu(self.pids)

    def signal_all(self, signum: int) -> None:
        for pid in self.pids:
            os.kill(pid, signum)

    def kill(self, name: str) -> None:
        """SIGKILL one conductor and reap it."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """SIGTERM every conductor (SIGCONT first, in case it was stopped); SIGKILL laggards."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
