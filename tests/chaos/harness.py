"""Conductor processes and a seeded fault injector for the chaos suite.

:class:`Fleet` keeps a fixed number of ``conductor run`` processes (slots), each
reaching the board through its own :class:`~tests.chaos.proxy.TcpProxy` when
the board has a server, so a network fault hits one conductor only. A slot
whose process is killed gets a replacement at once (a new name, the same
proxy); a process that exits by itself is replaced too and counted.

:class:`FaultInjector` draws faults from a :class:`random.Random` seeded by the
run's seed: which kind, which conductor (among those holding claims right
then, as the board lists them), and for how long. The first faults cover
every kind once in a seeded order; later ones are drawn freely. Replaying a
seed replays that schedule; the interleaving with the conductors' own timing
is the operating system's, so a replay reproduces the faults, not every race.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jobboard
from jobboard import JobState
from tests.chaos.chaos_flows import ORACLE_ENV
from tests.chaos.proxy import TcpProxy
from tests.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Slot:
    """One conductor position: its proxy, its current process and generation."""

    index: int
    proxy: TcpProxy | None
    proc: subprocess.Popen[bytes] | None = None
    gen: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"c{self.index}g{self.gen}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Fleet:
    """``size`` conductor processes serving the chaos flow from one board."""

    def __init__(
        self,
        workdir: Path,
        url_for: Callable[[Slot], str],
        *,
        size: int = 5,
        lease: float | None = None,
        max_jobs: int = 2,
        proxied_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.url_for = url_for
        self.lease = lease
        self.max_jobs = max_jobs
        self.slots = [
            Slot(i, TcpProxy(proxied_port) if proxied_port is not None else None)
            for i in range(size)
        ]
        self.unexpected_exits: list[str] = []
        self.oracle_dir = workdir / "oracle"
        self.oracle_dir.mkdir(exist_ok=True)

    def start(self) -> None:
        for slot in self.slots:
            self._launch(slot)

    def _launch(self, slot: Slot) -> None:
        slot.gen += 1
        log = self.workdir / f"{slot.name}.log"
        slot.logs.append(log)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env[ORACLE_ENV] = str(self.oracle_dir)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        lease = [] if self.lease is None else ["--lease", str(self.lease)]
        with open(log, "ab") as out:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "conductor", "run", "--board", self.url_for(slot),
                 "--flows", "tests.chaos.chaos_flows", "--name", slot.name,
                 "--max-jobs", str(self.max_jobs), "--log-format", "json",
                 "--log-level", "INFO", "--drain-timeout", "5", "--connect-timeout", "60",
                 *lease],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def slot_of_owner(self, owner: str | None) -> Slot | None:
        """The slot whose *current* process is ``owner`` (owners are ``name@host:pid:..``)."""
        if not owner:
            return None
        name = owner.split("@", 1)[0]
        for slot in self.slots:
            if slot.name == name and slot.alive:
                return slot
        return None

    def replace(self, slot: Slot) -> None:
        """Start the next generation of a slot (after a kill or an exit)."""
        self._launch(slot)

    def keep_alive(self) -> None:
        """Replace processes that exited by themselves, counting them."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                self.unexpected_exits.append(f"{slot.name} exited {slot.proc.returncode}")
                self._launch(slot)

    def stop(self) -> list[str]:
        """SIGTERM every process (after SIGCONT), wait; returns those that exited non-zero."""
        bad = []
        for slot in self.slots:
            if slot.alive:
                assert slot.proc is not None
                os.kill(slot.proc.pid, signal.SIGCONT)
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                code = slot.proc.wait(30)
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                code = slot.proc.wait(10)
            if code != 0:
                bad.append(f"{slot.name} exited {code} at stop")
        for slot in self.slots:
            if slot.proxy is not None:
                slot.proxy.close()
        return bad

    def log_paths(self) -> list[Path]:
        return [log for slot in self.slots for log in slot.logs if log.exists()]

    def tail(self, lines: int = 15) -> str:
        """The last lines of every conductor log, for a failing run's report."""
        parts = []
        for path in self.log_paths():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)


@dataclass
class Timing:
    """How long faults last, from the backend's lease or session timeout."""

    lease: float  # lease, or the ZooKeeper session timeout
    busy_timeout: float = 1.0


class FaultInjector:
    """Seeded faults aimed at conductors that hold claims (see the module docstring)."""

    def __init__(
        self,
        kinds: list[str],
        fleet: Fleet,
        observer: jobboard.JobBoard,
        rng: random.Random,
        timing: Timing,
        *,
        server: ServerProcess | None = None,
        sqlite_path: Path | None = None,
    ) -> None:
        self.kinds = kinds
        self.fleet = fleet
        self.observer = observer
        self.rng = rng
        self.timing = timing
        self.server = server
        self.sqlite_path = sqlite_path
        self.done: Counter[str] = Counter()
        self.log: list[str] = []

    def run(self, finished: Callable[[], bool], *, max_faults: int, window: float) -> None:
        """Inject faults until every job finished, ``max_faults`` or ``window`` seconds."""
        schedule = list(self.kinds)
        self.rng.shuffle(schedule)
        end = time.monotonic() + window
        while sum(self.done.values()) < max_faults and time.monotonic() < end:
            self.fleet.keep_alive()
            if finished():
                return
            time.sleep(self.rng.uniform(0.2, 0.8))  # the schedule's gap, not a synchronisation
            kind = schedule.pop(0) if schedule else self.rng.choice(self.kinds)
            target = self._holder()
            if target is None:
                schedule.insert(0, kind)  # nobody holds a claim right now: try again
                continue
            getattr(self, kind)(target)
            self.done[kind] += 1
            self.log.append(f"{kind}:{target.name if target else 'server'}")

    def _holder(self) -> Slot | None:
        """A conductor holding a claim now, drawn by the seeded generator."""
        try:
            owners = {j.owner for j in self.observer.iterjobs(states=[JobState.CLAIMED])}
        except jobboard.BoardError:
            return None
        slots = {s.index: s for o in owners if (s := self.fleet.slot_of_owner(o)) is not None}
        if not slots:
            return None
        return slots[self.rng.choice(sorted(slots))]

    # -- the faults ----------------------------------------------------------

    def kill9(self, slot: Slot) -> None:
        """``kill -9`` a claim holder, then start its replacement."""
        assert slot.proc is not None
        slot.proc.kill()
        slot.proc.wait(10)
        self.fleet.replace(slot)

    def stop_past_lease(self, slot: Slot) -> None:
        """SIGSTOP a claim holder past its lease (or session), then SIGCONT."""
        assert slot.proc is not None
        os.kill(slot.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(self.timing.lease + self.rng.uniform(0.5, 1.5))
        finally:
            os.kill(slot.proc.pid, signal.SIGCONT)

    def stop_at_task_end(self, slot: Slot) -> None:
        """Like :meth:`stop_past_lease`, but SIGSTOP the holder just as one of its tasks
        ends: it stops while saving that task or about to start the next one, the
        moment a lost claim is most dangerous."""
        assert slot.proc is not None
        log = self.fleet.oracle_dir / f"oracle-{slot.proc.pid}.jsonl"
        seen = _size(log)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            size = _size(log)
            if size != seen and _last_line(log).startswith('{"ev": "end"'):
                break
            seen = size
            time.sleep(0.0005)  # polling a file the target appends to
        self.stop_past_lease(slot)

    def server_restart(self, _slot: Slot | None) -> None:
        """Kill -9 the server and start it again on the same port and data."""
        assert self.server is not None
        self.server.restart(hard=True)

    def server_pause(self, _slot: Slot | None) -> None:
        """SIGSTOP the server for a while (sockets open, nothing answered)."""
        assert self.server is not None
        self.server.pause()
        try:
            time.sleep(self.rng.uniform(0.5, 1.5) * self.timing.lease)
        finally:
            self.server.resume()

    def partition(self, slot: Slot) -> None:
        """Blackhole a claim holder's connections, then heal (the old connections are cut)."""
        assert slot.proxy is not None
        slot.proxy.blackhole()
        try:
            time.sleep(self.rng.uniform(0.4, 1.5) * self.timing.lease)
        finally:
            slot.proxy.restore()

    def session_expiry(self, slot: Slot) -> None:
        """Blackhole a claim holder past its ZooKeeper session timeout: the server
        expires the session; on healing the client learns it and starts a new one."""
        assert slot.proxy is not None
        slot.proxy.blackhole()
        try:
            time.sleep(self.timing.lease + self.rng.uniform(1.0, 2.0))
        finally:
            slot.proxy.restore()

    def sqlite_lock(self, _slot: Slot | None) -> None:
        """Hold the SQLite write lock past the board's busy timeout."""
        assert self.sqlite_path is not None
        conn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(self.timing.busy_timeout + self.rng.uniform(0.3, 1.5))
            conn.execute("ROLLBACK")
        finally:
            conn.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _last_line(path: Path) -> str:
    """The last whole line of a small append-only file."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 400))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
