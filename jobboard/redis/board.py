"""Redis job board (``redis://`` and ``rediss://``).

Every change is one Lua script call (``jobboard/redis/lua/*.lua``; ``_lib.lua``
documents the key layout): waiting jobs sit in one sorted set per flow scored
by (priority, post order), claims are leases in a sorted set that the claim
scripts reap as they go, and every fenced write checks owner, token and lease
inside the server, atomically with the write. Every change is also published
as a JSON event, on the channel of the owner whose claim it concerns (or of the
namespace); one background thread per board listens to its owners' channels,
so that owners learn about cancels and lost claims without asking and an idle
conductor hears nothing of other conductors' jobs. See ``docs/redis.md``.

Reads (``get``, ``iterjobs``, ``load_progress``...) and idempotent writes
(``post`` with its client-made id, ``renew``, ``purge``, entities) are retried
on connection errors with jittered exponential backoff up to a deadline; other
writes are sent once and a connection error surfaces as ``BoardUnavailable``.

:class:`RedisBoard` is built in layers, one module each, every layer using
the ones below it:

* ``decoding``: job hashes, replies and script refusals read into the model;
* ``session``: the client, scripts, retries and error translation;
* ``subscription``: the event thread, which follows the channels of this process's
  owners (or every channel), and catches up after a reconnect;
* ``events``: what each event changes, wake-up and ``wait``;
* ``reads``: jobs, listings, progress and counters;
* ``writes``: fenced writes (progress, finish, abandon) and cancel;
* ``claims``: claiming and renewing;
* ``producers``: children and the schedules' record store;
* this module: the tunables, state and life cycle, posting, entities and purge.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Self

import redis

from jobboard import errors
from jobboard.changes import NewJob
from jobboard.model import BoardEvent, Claim, Entity, Job, JobRef, JobState
from jobboard.redis import topology
from jobboard.redis.decoding import decode_job, json_object, pairs, server_time, text
from jobboard.redis.durability import POLICIES
from jobboard.redis.idle import IdleKnowledge
from jobboard.redis.producers import RedisProducers
from jobboard.redis.session import log
from jobboard.urls import coerce_options, number_option, parse_options, redact_url

__all__ = ["RedisBoard"]

_BOARD_OPTIONS = frozenset(
    {"namespace", "lease", "retention", "max_payload", "max_attempts", "local_clock"}
)
#: Options of this backend, checked against POLICIES.
_POLICY_OPTIONS = ("persistence", "eviction")
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("none", "optional", "required")


class RedisBoard(RedisProducers):
    """A job board kept in one Redis database, shared by any number of processes.

    Open it with ``jobboard.connect("redis://[user:password@]host:port/db?namespace=...")``
    or give a ready client: ``RedisBoard(client=redis.Redis(...))`` (never closed here).
    """

    scheme = "redis"
    #: Finished-index entries one purge script call looks at.
    PURGE_BATCH: ClassVar[int] = 500
    LEASES_ON_REGISTER = True
    #: The settings count the last registration refresh read (see settings_version).
    _settings: int | None

    def __init__(
        self,
        name: str = "default",
        *,
        client: redis.Redis | None = None,
        connection: Mapping[str, Any] | None = None,
        retry_deadline: float | None = None,
        persistence: str = "warn",
        eviction: str = "warn",
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        for option, value in zip(_POLICY_OPTIONS, (persistence, eviction), strict=True):
            if value not in POLICIES:
                raise errors.BadURL(
                    f"board {name!r}: option {option!r} must be one of "
                    f"{', '.join(POLICIES)}, got {str(value)[:40]!r}"
                )
        self.persistence, self.eviction = persistence, eviction
        self._run_id, self._epoch, self._gen = "", 0, 0
        self._halted = None
        self._hello_lock = threading.RLock()
        self._check_run = "1"
        self._server = {}
        if (
            not isinstance(self.namespace, str)
            or not self.namespace
            or any(c in self.namespace for c in "{} \t\r\n")
        ):
            raise errors.BadURL(
                f"board {name!r}: option 'namespace' must be a non-empty string without "
                f"braces or spaces, got {self.namespace!r}"
            )
        self.retry_deadline = float(
            self.RETRY_DEADLINE if retry_deadline is None else retry_deadline
        )
        self._given = client
        self._connection = dict(connection or {})
        self._prefix = f"jb:{{{self.namespace}}}:"
        self._channel = self._prefix + "events"
        self._owners = set()
        self._follow_all = False
        self._follow_asked = self._follow_done = 0
        self._follow_cond = threading.Condition()
        self._blocked = {}
        self._pubsub = None
        self._observed_at = 0.0
        self._settings = None
        self._control = f"{self._prefix}control:{uuid.uuid4().hex}"
        self._client = None
        self._scripts = {}
        self._direct_pool = None
        self._spare, self._spare_pid = [], 0
        self._life_lock = threading.Lock()
        self._listener = None
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._waiters_lock = threading.Lock()
        self._waiters = []
        self._idle = IdleKnowledge(self.QUIET_MAX)
        self._pass_on = False

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``redis://[user:password@]host:port/db?namespace=...&lease=...``; ``rediss://``
        (or ``ssl=true``) adds TLS with ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``
        and ``ssl_cert_reqs`` (none / optional / required). ``redis+sentinel://`` and
        ``redis+cluster://`` reach a Sentinel-watched master or a Cluster (see
        :mod:`jobboard.redis.topology`). ``client=`` overrides the address with a ready
        client."""
        merged = coerce_options({**parse_options(url), **options}, url)
        connection = topology.address(url, merged)
        tls = bool(connection.get("ssl"))
        connection.update(
            socket_timeout=cls.SOCKET_TIMEOUT, socket_connect_timeout=cls.CONNECT_TIMEOUT
        )
        for key in ("username", "password"):
            if key in merged:
                connection[key] = merged.pop(key)
        for key, target in (
            ("socket_timeout", "socket_timeout"),
            ("connect_timeout", "socket_connect_timeout"),
        ):
            if key in merged:
                connection[target] = number_option(merged.pop(key), key, url)
        tls_options = {key: merged.pop(key) for key in _TLS_OPTIONS if key in merged}
        if tls_options and not tls:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: TLS options {sorted(tls_options)} need "
                "rediss:// (or ssl=true)"
            )
        if tls:
            reqs = str(tls_options.pop("ssl_cert_reqs", "required")).lower()
            if reqs not in _CERT_REQS:
                raise errors.BadURL(
                    f"board URL {redact_url(url)!r}: option 'ssl_cert_reqs' must be one of "
                    f"{', '.join(_CERT_REQS)}, got {reqs!r}"
                )
            connection.update(ssl_cert_reqs=reqs, **tls_options)
        if "retry_deadline" in merged:
            merged["retry_deadline"] = number_option(
                merged["retry_deadline"], "retry_deadline", url
            )
        extra = (
            set(merged) - _BOARD_OPTIONS - {"name", "client", "retry_deadline", *_POLICY_OPTIONS}
        )
        if extra:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: unknown option(s) {', '.join(sorted(extra))}"
            )
        name = merged.pop("name", None) or merged.get("namespace") or "default"
        return cls(name, connection=connection, **merged)

    def connect(self) -> Self:
        """Open the client (unless given), check it answers, start the event thread."""
        with self._life_lock:
            if self._client is not None:
                return self
            self._start_listening(self._open_client())
        if not self._subscribed.wait(self.CONNECT_TIMEOUT + self.SOCKET_TIMEOUT):
            log.warning("redis board %r: event subscription not ready yet", self.namespace)
        return self

    def close(self) -> None:
        """Stop the event thread; close the client unless it was given."""
        with self._life_lock:
            client, self._client = self._client, None
            if client is None:
                return
            self._stop_listening(client)
            if self._given is None:
                client.close()
            self._spare.clear()
        self._wake(None)

    # Claims: first follow the owner's event channel (see ``events``).

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        self._follow_owner(who)
        return super().claim(job, who, lease=lease)

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        self._follow_owner(who)
        return super().claim_next(who, flows, lease=lease)

    def add_listener(
        self, callback: Callable[[BoardEvent], None], *, held_only: bool = False
    ) -> None:
        super().add_listener(callback, held_only=held_only)
        if not held_only:
            self._follow_everything()  # watch, wait_for: every event of the board

    def __repr__(self) -> str:
        return f"<RedisBoard {self.name!r} namespace={self.namespace!r} at {self._where()}>"


    # -- producers ----------------------------------------------------------

    def _post(self, new: NewJob) -> Job:
        job_id = uuid.uuid4().hex
        args = (
            job_id,
            new.name,
            new.flow,
            new.store_json,
            new.details_json,
            new.priority.value,
            new.priority.rank,
            new.max_attempts,
            new.key or "",
            "" if new.delay is None else repr(new.delay),
            "" if new.not_before is None else repr(new.not_before),
            new.parent or "",
        )
        raw = self._call(
            "post",
            job_id,
            lambda: self._script("post", self._job_key(job_id), *args),
            # The id is made here, and a key names one job: sending it twice adds one job.
            safe=True,
        )
        fields = pairs(raw)
        return decode_job(fields.get("id", job_id), fields)

    # -- flow pauses (hash ``<prefix>pauses``: flow -> JSON note) -------------

    def _read_pauses(self) -> dict[str, str]:
        raw = self._call(
            "paused_flows", None, lambda: self._redis().hgetall(f"{self._prefix}pauses"), safe=True
        )
        return {text(k): text(v) for k, v in raw.items()}

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        # One script: the note and the settings count that conductors' heartbeats read.
        before = self._call(
            "resume_flow" if encoded is None else "pause_flow",
            None,
            lambda: self._scripts["set_pause"](
                keys=[f"{self._prefix}pauses"], args=[self._prefix, flow, encoded or ""]
            ),
            safe=True,
        )
        return bool(before)

    # -- entities -----------------------------------------------------------

    def register_entity(
        self, name: str, kind: str = "conductor", metadata: Mapping[str, Any] | None = None
    ) -> None:
        for field_name, value in (("name", name), ("kind", kind)):
            if not isinstance(value, str) or not value:
                raise errors.InvalidJob(
                    f"entity field {field_name!r} must be a non-empty string", field=field_name
                )
        encoded = self._encode(dict(metadata or {}), "metadata", name)
        _, settings, now, lease_end = self._call(
            "register_entity",
            None,
            lambda: self._script(
                "register_entity",
                f"{self._prefix}entities:{kind}",
                kind,
                name,
                encoded,
                repr(self.DEFAULT_ENTITY_TTL),
            ),
            safe=True,
        )
        self._settings = int(settings)
        # The heartbeat tells an idle waiter of other conductors' leases (see events).
        self._heard_leases(float(now), None if lease_end is None else float(lease_end))

    def settings_version(self) -> int | None:
        return self._settings

    def unregister_entity(self, name: str, kind: str = "conductor") -> None:
        def write() -> None:
            pipe = self._pipeline()
            pipe.hdel(f"{self._prefix}entities:{kind}", name)
            pipe.zrem(f"{self._prefix}seen:{kind}", name)
            pipe.execute()

        self._call("unregister_entity", None, write, safe=True)

    def iter_entities(self, kind: str = "conductor") -> list[Entity]:
        def read() -> list[Any]:
            pipe = self._pipeline()
            pipe.time()
            pipe.zrange(f"{self._prefix}seen:{kind}", 0, -1, withscores=True)
            pipe.hgetall(f"{self._prefix}entities:{kind}")
            return pipe.execute()

        now, seen, metadata = self._call("iter_entities", None, read, safe=True)
        horizon = server_time(now) - self.DEFAULT_ENTITY_TTL
        texts = {text(k): text(v) for k, v in metadata.items()}
        out = []
        for raw_name, last_seen in seen:
            name = text(raw_name)
            if last_seen < horizon or name not in texts:
                continue
            try:
                info = json_object(texts[name])
            except ValueError:
                log.warning("redis board %r: entity %r has corrupt metadata", self.namespace, name)
                info = {}
            out.append(Entity(name, kind, info, last_seen))
        return sorted(out, key=lambda e: e.name)

    # -- operators ----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The common statistics plus ``server``: persistence and what a crash may
        lose, eviction policy, the board's epoch and whether it refuses to work."""
        stats = super().stats()
        stats["server"] = self.server_info()
        return stats

    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        names = sorted(s.value for s in wanted)

        def batch(offset: int) -> list[int]:
            counts: list[int] = self._script(
                "purge",
                f"{self._prefix}finished",
                repr(float(older_than)),
                offset,
                self.PURGE_BATCH,
                *names,
            )
            return counts

        total = offset = 0
        while True:
            # Safe to repeat: deleting what is already gone changes nothing.
            deleted, kept, scanned = self._call(
                "purge", None, functools.partial(batch, offset), safe=True
            )
            total += deleted
            offset += kept
            if scanned < self.PURGE_BATCH:
                return total
