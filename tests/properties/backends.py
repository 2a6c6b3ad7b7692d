"""How the property tests open, age, restart and clean up each backend.

An :class:`Env` hides the one thing the contract leaves to each backend: how
time passes (the memory board's injectable clock, or a real short lease and a
bounded wait on a server) and whether the data survives a server restart
(Redis with AOF ``appendfsync always``, ZooKeeper, a reopened SQLite file).
Everything else goes through ``jobboard.connect`` and the board contract.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jobboard
from jobboard import Claim, JobBoard, JobState
from tests.servers import RedisServer, ZooKeeperServer

T = TypeVar("T")

#: Lease of the claims the tests make: long enough never to run out by itself.
LONG_LEASE = 120.0
#: Lease a claim is renewed to when a test lets it run out.
SHORT_LEASE = 0.3


def eventually(fn: Callable[[], T], timeout: float = 15.0, what: str = "") -> T:
    """Call ``fn`` until it returns a truthy value without ``BoardUnavailable``; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except jobboard.BoardUnavailable:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or fn}")
        time.sleep(0.02)


def slow_clock() -> float:
    """A local clock running a thousand times slow: an owner whose heartbeat thread was
    descheduled, or whose clock is skewed, and so believes its lease still runs."""
    return time.monotonic() / 1000.0


def answers(board: JobBoard) -> bool:
    """True once the board's server answers a read (raises while it does not)."""
    board.job_count  # noqa: B018 - the round trip is the point
    return True


def connected(board: JobBoard) -> bool:
    return board.connected


class Env:
    """One backend for the state machine."""

    name = ""
    #: The backend promises that its data outlives a server restart.
    survives_restart = False
    #: Closing an owner's board ends its claims at once (session-bound claims).
    claims_die_with_board = False
    #: ``claim_next`` takes exactly the best job, and a job whose lease lapsed is waiting
    #: like any other. False where known defects (tests/properties/test_lapsed_leases.py)
    #: are tolerated by the state machine so that it keeps looking for others.
    strict_order = True

    #: ``open(..., skewed=True)`` is supported (the board takes a ``local_clock``).
    can_skew = False

    def open(self, namespace: str, skewed: bool = False) -> JobBoard:
        """A connected board on ``namespace``; ``skewed`` gives it :func:`slow_clock`."""
        raise NotImplementedError

    def expire(self, board: JobBoard, claim: Claim) -> None:
        """Let ``claim`` run out: renew it to a short lease, then let that lease pass."""
        renewed = board.renew([claim], lease=SHORT_LEASE)
        assert renewed[claim.job_id] is not None, f"renewing a live claim failed: {claim}"
        eventually(
            lambda: board.get(claim.job_id).state is JobState.WAITING,
            what=f"lease of {claim.job_id} to run out",
        )

    def restart(self, boards: dict[str, JobBoard], namespace: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the env started."""


class MemoryEnv(Env):
    """The in-memory board, with board time from a clock the test moves."""

    name = "memory"

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def clock(self) -> float:
        return self.now

    def open(self, namespace: str, skewed: bool = False) -> JobBoard:
        return jobboard.connect(f"memory://{namespace}", clock=self.clock)

    def expire(self, board: JobBoard, claim: Claim) -> None:
        renewed = board.renew([claim], lease=SHORT_LEASE)
        assert renewed[claim.job_id] is not None, f"renewing a live claim failed: {claim}"
        self.now += SHORT_LEASE + 0.01


class SqliteEnv(Env):
    """A SQLite file; a "restart" closes every board and opens the file again."""

    name = "sqlite"
    survives_restart = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def open(self, namespace: str, skewed: bool = False) -> JobBoard:
        return jobboard.connect(f"sqlite://{self.folder / 'props.db'}?namespace={namespace}")

    def restart(self, boards: dict[str, JobBoard], namespace: str) -> None:
        for who, board in list(boards.items()):
            board.close()
            boards[who] = self.open(namespace)


class RedisEnv(Env):
    """A private redis-server with AOF and ``appendfsync always``; restarts are ``kill -9``."""

    name = "redis"
    survives_restart = True

    def __init__(self) -> None:
        self.server = RedisServer(persistent=True)
        self.server.start()

    can_skew = True

    def open(self, namespace: str, skewed: bool = False) -> JobBoard:
        options = {"local_clock": slow_clock} if skewed else {}
        return jobboard.connect(f"{self.server.url}?namespace={namespace}", **options)

    def restart(self, boards: dict[str, JobBoard], namespace: str) -> None:
        self.server.restart(hard=True)
        for board in boards.values():
            eventually(functools.partial(answers, board), what="redis back")

    def close(self) -> None:
        self.server.cleanup()


class ZooKeeperEnv(Env):
    """A private ZooKeeper; restarts are ``kill -9`` (sessions outlive it, so do claims)."""

    name = "zookeeper"
    survives_restart = True
    claims_die_with_board = True
    #: After losing a race, claim_next spreads over the few best jobs of the best
    #: priority for a while (documented); and the lapsed-lease defects are tolerated.
    strict_order = False
    #: Sessions (and so claims) outlive a restart if the client is back within this time.
    #: kazoo waits about 2/3 of it on a connection the restarting server accepted but
    #: never answered, so a longer timeout makes some restarts much slower.
    SESSION_TIMEOUT = 9.0

    def __init__(self) -> None:
        self.server = ZooKeeperServer(max_session_timeout=60_000)
        self.server.start(timeout=60)

    can_skew = True

    def open(self, namespace: str, skewed: bool = False) -> JobBoard:
        options = {"local_clock": slow_clock} if skewed else {}
        return jobboard.connect(
            f"zookeeper://{self.server.hosts}/props?namespace={namespace}"
            f"&session_timeout={self.SESSION_TIMEOUT}",
            **options,
        )

    def restart(self, boards: dict[str, JobBoard], namespace: str) -> None:
        self.server.restart(hard=True)
        for board in boards.values():
            eventually(functools.partial(connected, board), 30.0, what="zookeeper session back")

    def close(self) -> None:
        self.server.cleanup()
