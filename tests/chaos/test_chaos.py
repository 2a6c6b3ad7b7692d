"""Chaos: real conductors on real boards under seeded faults, judged by an outside oracle.

For Redis (AOF with ``appendfsync always``), ZooKeeper and SQLite: post a few
hundred jobs of the three-task ``chaos`` flow, start five ``conductor run``
processes, and inject faults at the conductors that hold claims while they
work (see :mod:`tests.chaos.harness`):

==================  =====  =========  ======
fault               Redis  ZooKeeper  SQLite
==================  =====  =========  ======
kill -9 + replace     x        x         x
SIGSTOP past lease    x        x         x
(also at a task end)
server restart        x        x
server paused         x        x
network partition     x        x
session expiry                 x
write lock held                          x
==================  =====  =========  ======

Then every job must finish, and the oracle (:mod:`tests.chaos.oracle`) must
find nothing lost, stuck, consumed twice, re-run after its save, or written
with a stale token. One summary line per backend is printed.

The seed is printed; ``CHAOS_SEED=<n>`` replays the fault schedule.
``CHAOS_JOBS`` changes the number of jobs (default 300).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import jobboard
from tests.chaos.chaos_flows import FLOW
from tests.chaos.harness import FaultInjector, Fleet, Slot, Timing
from tests.chaos.oracle import Verdict, count_consumed, judge, read_final, read_task_log
from tests.servers import RedisServer, ServerProcess, ZooKeeperServer, missing_server

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
JOBS = int(os.environ.get("CHAOS_JOBS", "300"))
CONDUCTORS = 5
LEASE = 1.5  # Redis and SQLite claims
SESSION_TIMEOUT = 2.0  # ZooKeeper claims (bound to the session)
BUSY_TIMEOUT = 1.0  # SQLite
TASK_PAUSE = 0.2  # seconds of work per task
MAX_FAULTS = 16
INJECTION_WINDOW = 50.0
#: Every job must be finished this long after the last fault; past it, unfinished jobs are stuck.
FINISH_BOUND = 60.0


@dataclass
class Setup:
    """One backend's run: how conductors reach it, how the test observes it, what faults apply."""

    backend: str
    url_for: Callable[[Slot], str]
    observer_url: str
    kinds: list[str]
    timing: Timing
    lease: float | None
    proxied_port: int | None = None
    server: ServerProcess | None = None
    sqlite_path: Path | None = None


@contextlib.contextmanager
def redis_setup(tmp_path: Path) -> Iterator[Setup]:
    if not RedisServer.binary():
        missing_server("redis-server")
    server = RedisServer(persistent=True)
    server.start()
    ns = f"chaos{uuid.uuid4().hex[:8]}"
    query = f"namespace={ns}&lease={LEASE}&socket_timeout=2"
    try:
        yield Setup(
            "redis",
            lambda slot: f"redis://127.0.0.1:{slot.proxy.port}/0?{query}",  # type: ignore[union-attr]
            f"{server.url}?{query}",
            [
                "kill9",
                "stop_past_lease",
                "stop_at_task_end",
                "server_restart",
                "server_pause",
                "partition",
            ],
            Timing(LEASE),
            LEASE,
            proxied_port=server.port,
            server=server,
        )
    finally:
        server.cleanup()


@contextlib.contextmanager
def zookeeper_setup(tmp_path: Path) -> Iterator[Setup]:
    if not ZooKeeperServer.binary():
        missing_server("ZooKeeper (java and /usr/share/java/zookeeper.jar)")
    server = ZooKeeperServer()
    server.start(timeout=60)
    ns = f"chaos{uuid.uuid4().hex[:8]}"
    try:
        yield Setup(
            "zookeeper",
            lambda slot: (
                f"zookeeper://127.0.0.1:{slot.proxy.port}/chaos"  # type: ignore[union-attr]
                f"?namespace={ns}&session_timeout={SESSION_TIMEOUT}"
            ),
            f"zookeeper://{server.hosts}/chaos?namespace={ns}&session_timeout=10",
            [
                "kill9",
                "stop_past_lease",
                "stop_at_task_end",
                "server_restart",
                "server_pause",
                "partition",
                "session_expiry",
            ],  # fmt: skip
            Timing(SESSION_TIMEOUT),
            None,
            proxied_port=server.port,
            server=server,
        )
    finally:
        server.cleanup()


@contextlib.contextmanager
def sqlite_setup(tmp_path: Path) -> Iterator[Setup]:
    path = tmp_path / "board.db"
    url = f"sqlite://{path}?namespace=chaos&lease={LEASE}&busy_timeout={BUSY_TIMEOUT}"
    yield Setup(
        "sqlite",
        lambda slot: url,
        url,
        ["kill9", "stop_past_lease", "stop_at_task_end", "sqlite_lock"],
        Timing(LEASE, BUSY_TIMEOUT),
        LEASE,
        sqlite_path=path,
    )


def _connect(url: str, deadline: float = 60.0) -> jobboard.JobBoard:
    """Open the test's own board, riding out a server that is restarting."""
    end = time.monotonic() + deadline
    while True:
        try:
            return jobboard.connect(url)
        except jobboard.BoardUnavailable:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _unfinished(board: jobboard.JobBoard) -> int | None:
    """Unfinished jobs as the board counts them; None while the board does not answer."""
    try:
        return board.job_count
    except jobboard.BoardError:
        return None


def run_chaos(setup: Setup, workdir: Path) -> tuple[Verdict, FaultInjector, Fleet, float]:
    """Post, serve under faults, wait for the end, judge. Returns the verdict and the parts."""
    rng = random.Random(f"{SEED}-{setup.backend}")
    started = time.monotonic()
    board = _connect(setup.observer_url)
    fleet = Fleet(
        workdir, setup.url_for, size=CONDUCTORS, lease=setup.lease, proxied_port=setup.proxied_port
    )
    try:
        # Given: a backlog of jobs and five conductors serving it.
        job_ids = [
            board.post(f"chaos-{i}", FLOW, {"chaos": {"pause": TASK_PAUSE}}, max_attempts=1000).id
            for i in range(JOBS)
        ]
        fleet.start()
        injector = FaultInjector(
            setup.kinds,
            fleet,
            board,
            rng,
            setup.timing,
            server=setup.server,
            sqlite_path=setup.sqlite_path,
        )
        # When: faults strike claim holders while they work.
        injector.run(
            lambda: _unfinished(board) == 0, max_faults=MAX_FAULTS, window=INJECTION_WINDOW
        )
        # Then: every job finishes within a bound, and the oracle finds no violation.
        bound = time.monotonic() + FINISH_BOUND
        while _unfinished(board) != 0 and time.monotonic() < bound:
            fleet.keep_alive()
            time.sleep(0.2)
        stop_errors = fleet.stop()
        fleet.unexpected_exits.extend(stop_errors)
        final = read_final(board, job_ids)
    finally:
        fleet.stop()
        board.close()
    events = read_task_log(fleet.oracle_dir)
    verdict = judge(final, events, count_consumed(fleet.log_paths()))
    return verdict, injector, fleet, time.monotonic() - started


def summary_line(backend: str, verdict: Verdict, injector: FaultInjector, seconds: float) -> str:
    faults = ",".join(f"{kind}={injector.done[kind]}" for kind in injector.kinds)
    return (
        f"CHAOS {backend} seed={SEED} jobs={verdict.jobs} faults[{faults}] "
        f"in_flight_reruns={verdict.in_flight_reruns} lost={verdict.lost} stuck={verdict.stuck} "
        f"double_consumed={verdict.double_consumed} "
        f"saved_task_reruns={verdict.saved_task_reruns} "
        f"stale_writes_accepted={verdict.stale_writes_accepted} "
        f"token_reused={verdict.token_reused} seconds={seconds:.0f}"
    )


SETUPS = {"redis": redis_setup, "zookeeper": zookeeper_setup, "sqlite": sqlite_setup}


@dataclass
class Outcome:
    """One backend's chaos run, judged."""

    backend: str
    verdict: Verdict
    injector: FaultInjector
    exits: list[str]
    seconds: float

    @property
    def replay(self) -> str:
        details = "\n".join(f"{kind}: {ex}" for kind, ex in self.verdict.examples.items())
        return f"replay with CHAOS_SEED={SEED}; faults: {self.injector.log}\n{details}"


@pytest.fixture(scope="module", params=sorted(SETUPS))
def chaos(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One chaos run per backend, shared by the checks below."""
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"chaos-{backend}")
    with SETUPS[backend](workdir) as setup:
        verdict, injector, fleet, seconds = run_chaos(setup, workdir)
    if verdict.violations:
        print(fleet.tail())
    return Outcome(backend, verdict, injector, fleet.unexpected_exits, seconds)


def test_every_fault_struck(chaos: Outcome, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the run's figures; every kind of fault of the backend was injected."""
    with capsys.disabled():
        print(f"\n{summary_line(chaos.backend, chaos.verdict, chaos.injector, chaos.seconds)}")
        if chaos.exits:
            print(f"CHAOS {chaos.backend} conductors that exited by themselves: {chaos.exits}")
    missing = [kind for kind in chaos.injector.kinds if not chaos.injector.done[kind]]
    assert not missing, f"faults never injected: {missing}; {chaos.replay}"


def test_no_job_lost_or_stuck(chaos: Outcome) -> None:
    assert (chaos.verdict.lost, chaos.verdict.stuck) == (0, 0), chaos.replay


def test_each_job_consumed_once(chaos: Outcome) -> None:
    assert chaos.verdict.double_consumed == 0, chaos.replay


def test_no_stale_write_accepted(chaos: Outcome) -> None:
    assert chaos.verdict.stale_writes_accepted == 0, chaos.replay
    assert chaos.verdict.token_reused == 0, chaos.replay


def test_no_saved_task_runs_again(chaos: Outcome) -> None:
    assert chaos.verdict.saved_task_reruns == 0, chaos.replay
