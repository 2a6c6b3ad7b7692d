"""Job boards: post jobs, claim them with fenced leases, record progress.

Open any backend with :func:`connect`::

    board = jobboard.connect("redis://127.0.0.1:6379/0?namespace=prod")
    board = jobboard.connect("redis+sentinel://s1:26379,s2:26379/mymaster?namespace=prod")
    board = jobboard.connect("redis+cluster://n1:7000,n2:7001/?namespace=prod")
    board = jobboard.connect("zookeeper://zk1:2181,zk2:2181/conductor")
    board = jobboard.connect("sqlite:///var/lib/conductor/board.db")
    board = jobboard.connect("memory://tests")

Everything a producer, a conductor or an operator needs is importable from
here; the contract every backend keeps is :class:`JobBoard` (module
:mod:`jobboard.base`). Backends live in their own packages
(:mod:`jobboard.redis`, :mod:`jobboard.zookeeper`, :mod:`jobboard.sqlite`,
:mod:`jobboard.memory`) and are loaded only when a URL names them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from jobboard.base import JobBoard
from jobboard.errors import (
    BadURL,
    BoardError,
    BoardRegressed,
    BoardUnavailable,
    ClaimError,
    CorruptJob,
    InvalidJob,
    InvalidState,
    JobNotFound,
    NotOwner,
    StaleToken,
    UnclaimableJob,
    VersionConflict,
    WaitTimeout,
)
from jobboard.finishing import ConsumedNext
from jobboard.model import (
    ACTIVE_STATES,
    FINISHED_STATES,
    BoardEvent,
    Claim,
    ClaimStatus,
    Entity,
    Job,
    JobPriority,
    JobRef,
    JobState,
    Versioned,
    unique_owner,
)
from jobboard.urls import parse_options, redact_url

__all__ = [
    # opening a board
    "connect",
    "backend_for",
    "parse_options",
    "redact_url",
    "ENTRY_POINT_GROUP",
    # the contract
    "JobBoard",
    # jobs, claims and events
    "Job",
    "JobRef",
    "JobPriority",
    "JobState",
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "Claim",
    "ClaimStatus",
    "ConsumedNext",
    "Entity",
    "BoardEvent",
    "Versioned",
    "unique_owner",
    # errors
    "BoardError",
    "BoardUnavailable",
    "BoardRegressed",
    "InvalidJob",
    "CorruptJob",
    "JobNotFound",
    "ClaimError",
    "UnclaimableJob",
    "NotOwner",
    "StaleToken",
    "InvalidState",
    "WaitTimeout",
    "VersionConflict",
    "BadURL",
]

#: The entry point group in which backends register their URL scheme.
ENTRY_POINT_GROUP = "jobboard.backends"

# The built-in backends (the package also registers them as entry points, for other tools).
_BUILTIN = {
    "memory": "jobboard.memory:MemoryBoard",
    "redis": "jobboard.redis:RedisBoard",
    "rediss": "jobboard.redis:RedisBoard",
    "redis+sentinel": "jobboard.redis:RedisBoard",
    "rediss+sentinel": "jobboard.redis:RedisBoard",
    "redis+cluster": "jobboard.redis:RedisBoard",
    "rediss+cluster": "jobboard.redis:RedisBoard",
    "zookeeper": "jobboard.zookeeper:ZookeeperBoard",
    "sqlite": "jobboard.sqlite:SqliteBoard",
}


def backend_for(scheme: str) -> type[JobBoard]:
    """The board class of a URL scheme: a built-in backend, else one registered by
    another package under the entry point group ``jobboard.backends``.

    The built-in schemes are looked up first, without reading the installed
    packages' metadata (importing ``importlib.metadata`` and scanning every
    distribution costs about 30 ms of each daemon's start-up)."""
    target = _BUILTIN.get(scheme)
    if target is not None:
        module, _, attr = target.partition(":")
        builtin: type[JobBoard] = getattr(import_module(module), attr)
        return builtin
    from importlib import metadata

    found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        if ep.name == scheme:
            loaded: type[JobBoard] = ep.load()
            return loaded
    known = sorted({ep.name for ep in found} | set(_BUILTIN))
    raise BadURL(f"unknown board scheme {scheme!r}; known schemes: {', '.join(known)}")


def connect(url: str, **options: Any) -> JobBoard:
    """Open and connect the board a URL names.

    Options come from the URL's query string and from keyword arguments
    (keywords win). Common ones: ``namespace``, ``lease``, ``retention``,
    ``max_payload``, ``max_attempts``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise BadURL(f"board URL must look like scheme://..., got {url!r}")
    scheme = urlsplit(url).scheme.lower()
    cls = backend_for(scheme)
    board = cls.from_url(url, **options)
    return board.connect()
