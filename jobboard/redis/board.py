"""Redis job board (``redis://`` and ``rediss://``).

Every change is one Lua script call (``jobboard/lua/*.lua``; ``_lib.lua``
documents the key layout): waiting jobs sit in one sorted set per flow scored
by (priority, post order), claims are leases in a sorted set that the claim
scripts reap as they go, and every fenced write checks owner, token and lease
inside the server, atomically with the write. Every change is also published
as a JSON event on one channel per namespace; one background thread per board
listens to it, so waiters wake up on posts and owners learn about cancels and
lost claims without asking. See ``docs/redis.md``.

Reads (``get``, ``iterjobs``, ``load_progress``...) and idempotent writes
(``post`` with its client-made id, ``renew``, ``purge``, entities) are retried
on connection errors with jittered exponential backoff up to a deadline; other
writes are sent once and a connection error surfaces as ``BoardUnavailable``.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from importlib import resources
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobboard import errors
from jobboard.base import (
    FINISHED_STATES,
    BoardEvent,
    Claim,
    Entity,
    Job,
    JobBoard,
    JobPriority,
    JobRef,
    JobState,
    coerce_options,
    redact_url,
)

__all__ = ["RedisBoard"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCRIPTS = (
    "post",
    "claim",
    "claim_next",
    "renew",
    "save_progress",
    "finish",
    "abandon",
    "cancel",
    "purge",
    "register_entity",
)
_BOARD_OPTIONS = frozenset(
    {"namespace", "lease", "retention", "max_payload", "max_attempts", "local_clock"}
)
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("none", "optional", "required")
_WAKE_KINDS = frozenset({"posted", "abandoned", "expired"})
#: The operation named in errors about finishing writes, by the event they publish.
_OP_OF_EVENT = {"consumed": "consume", "failed": "fail", "cancelled": "fail", "trashed": "trash"}
#: Error replies of the scripts ("JB <CODE> <rest>") and what they mean here.
_REFUSALS: dict[str, tuple[type[errors.BoardError], str]] = {
    "NOTFOUND": (errors.JobNotFound, "no job {job} on board {board}"),
    "FINISHED": (errors.InvalidState, "job {job} is already {rest}"),
    "IDLE": (errors.InvalidState, "job {job} is not claimed; nothing to abandon"),
    "STALE": (errors.StaleToken, "job {job}: the token is stale (current token {rest})"),
    "NOTCLAIMED": (errors.NotOwner, "job {job} is not claimed (its lease may have expired)"),
    "MISMATCH": (errors.NotOwner, "job {job}: the token does not match the claim's ({rest})"),
    "NOTOWNER": (errors.NotOwner, "job {job} is owned by {rest}"),
    "UNCLAIMABLE": (errors.UnclaimableJob, "job {job} is {rest}; it cannot be claimed"),
    "POISON": (errors.UnclaimableJob, "job {job} was trashed: {rest}"),
    "CORRUPT": (errors.InvalidJob, ""),
}


@functools.cache
def _script_source(name: str) -> str:
    """One script's text with the shared helpers of ``_lib.lua`` in front."""
    folder = resources.files("jobboard.redis") / "lua"
    return (folder / "_lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, str]:
    """A flat HGETALL-style reply as a dict of text."""
    return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _field(fields: Mapping[str, str], job_id: str, name: str, convert: Callable[[str], T]) -> T:
    text = fields.get(name)
    if not text:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record has no field {name!r}; trash it with force",
            field=name,
            job=job_id,
        )
    try:
        return convert(text)
    except (ValueError, TypeError) as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: stored field {name!r} is corrupt ({err}); trash it with force",
            field=name,
            job=job_id,
        ) from err


def _decode_job(job_id: str, raw: Mapping[Any, Any], now: float | None = None) -> Job:
    """Build a Job from its hash; a claim whose lease ended by ``now`` reads as waiting.

    Raises ``InvalidJob`` naming the job and the field when the record is corrupt.
    """
    try:
        fields = {_text(k): _text(v) for k, v in raw.items()}
    except UnicodeDecodeError as err:
        raise errors.InvalidJob(
            f"job {job_id!r}: the stored record is not UTF-8 text ({err})", job=job_id
        ) from err

    def optional(name: str) -> float | None:
        return _field(fields, job_id, name, float) if fields.get(name) else None

    result = _field(fields, job_id, "result", json.loads) if fields.get("result") else None
    job = Job(
        id=_field(fields, job_id, "id", str),
        name=_field(fields, job_id, "name", str),
        flow=_field(fields, job_id, "flow", str),
        store=_field(fields, job_id, "store", _json_object),
        priority=_field(fields, job_id, "priority", JobPriority),
        state=_field(fields, job_id, "state", JobState),
        created_at=_field(fields, job_id, "created_at", float),
        updated_at=_field(fields, job_id, "updated_at", float),
        seq=_field(fields, job_id, "seq", int),
        attempts=_field(fields, job_id, "attempts", int),
        max_attempts=_field(fields, job_id, "max_attempts", int),
        owner=fields.get("owner") or None,
        token=_field(fields, job_id, "token", int),
        claimed_at=optional("claimed_at"),
        lease_expires_at=optional("lease_expires_at"),
        cancel_requested=fields.get("cancel_requested") == "1",
        finished_at=optional("finished_at"),
        result=result,
        last_error=fields.get("last_error") or None,
        details=_field(fields, job_id, "details", _json_object),
    )
    if now is not None and job.state is JobState.CLAIMED and (job.lease_expires_at or 0.0) <= now:
        job = replace(
            job, state=JobState.WAITING, owner=None, claimed_at=None, lease_expires_at=None
        )
    return job


def _server_time(reply: tuple[int, int]) -> float:
    return reply[0] + reply[1] / 1e6


class RedisBoard(JobBoard):
    """A job board kept in one Redis database, shared by any number of processes.

    Open it with ``jobboard.connect("redis://[user:password@]host:port/db?namespace=...")``
    or give a ready client: ``RedisBoard(client=redis.Redis(...))`` (never closed here).
    """

    scheme = "redis"
    #: Seconds to wait for a TCP connection to the server.
    CONNECT_TIMEOUT: float = 2.0
    #: Seconds a request waits for its reply before the server counts as unreachable.
    SOCKET_TIMEOUT: float = 5.0
    #: Seconds during which reads and idempotent writes retry connection errors.
    RETRY_DEADLINE: float = 5.0
    #: First and longest pause (seconds) between those retries (jittered, doubling).
    RETRY_INITIAL: float = 0.05
    RETRY_MAX: float = 1.0
    #: Most expired leases one claim call ends (the reaper step's batch).
    REAP_BATCH: int = 100
    #: Most poison jobs one claim_next script trashes before it is called again.
    SKIP_LIMIT: int = 32
    #: Jobs read per pipeline when listing.
    READ_BATCH: int = 500
    #: Finished-index entries one purge script call looks at.
    PURGE_BATCH: int = 500
    #: Seconds the event thread blocks per read; bounds how long close() waits
    #: for it when the server cannot be told to wake it.
    LISTEN_POLL: float = 1.0
    #: First and longest pause (seconds) between event-subscription reconnects.
    LISTEN_BACKOFF: float = 0.1
    LISTEN_BACKOFF_MAX: float = 5.0
    #: Seconds of silence after which the event link is checked with a PING.
    HEALTH_CHECK_INTERVAL: float = 10.0

    def __init__(
        self,
        name: str = "default",
        *,
        client: redis.Redis | None = None,
        connection: Mapping[str, Any] | None = None,
        retry_deadline: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
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
        self._control = f"{self._prefix}control:{uuid.uuid4().hex}"
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._life_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[frozenset[str] | None, threading.Event]] = []

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """``redis://[user:password@]host:port/db?namespace=...&lease=...``; ``rediss://``
        adds TLS with ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
        ``ssl_cert_reqs`` (none / optional / required). ``client=`` overrides the
        address with a ready ``redis.Redis``."""
        from jobboard import parse_options

        parts = urlsplit(url)
        tls = parts.scheme.lower() == "rediss"
        merged = coerce_options({**parse_options(url), **options}, url)
        try:
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError as err:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: bad port or database ({err})"
            ) from err
        connection: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": port,
            "db": db,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "socket_timeout": cls.SOCKET_TIMEOUT,
            "socket_connect_timeout": cls.CONNECT_TIMEOUT,
        }
        for key in ("username", "password"):
            if key in merged:
                connection[key] = merged.pop(key)
        for key, target in (
            ("socket_timeout", "socket_timeout"),
            ("connect_timeout", "socket_connect_timeout"),
        ):
            if key in merged:
                connection[target] = _float_option(merged.pop(key), key, url)
        tls_options = {key: merged.pop(key) for key in _TLS_OPTIONS if key in merged}
        if tls_options and not tls:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: TLS options {sorted(tls_options)} need rediss://"
            )
        if tls:
            reqs = str(tls_options.pop("ssl_cert_reqs", "required")).lower()
            if reqs not in _CERT_REQS:
                raise errors.BadURL(
                    f"board URL {redact_url(url)!r}: option 'ssl_cert_reqs' must be one of "
                    f"{', '.join(_CERT_REQS)}, got {reqs!r}"
                )
            connection.update(ssl=True, ssl_cert_reqs=reqs, **tls_options)
        if "retry_deadline" in merged:
            merged["retry_deadline"] = _float_option(
                merged["retry_deadline"], "retry_deadline", url
            )
        extra = set(merged) - _BOARD_OPTIONS - {"name", "client", "retry_deadline"}
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
            client = self._given or redis.Redis(
                **self._connection,
                retry=Retry(NoBackoff(), 0),  # writes are never resent blindly
                health_check_interval=self.HEALTH_CHECK_INTERVAL,
            )
            self._client = client
            self._scripts = {n: client.register_script(_script_source(n)) for n in _SCRIPTS}
            try:
                self._call("connect", None, client.ping, safe=True)
            except errors.BoardError:
                self._client = None
                if self._given is None:
                    client.close()
                raise
            self._stopping.clear()
            self._listener = threading.Thread(
                target=self._listen,
                args=(client,),
                name=f"jobboard-events-{self.namespace}",
                daemon=True,
            )
            self._listener.start()
        if not self._subscribed.wait(self.CONNECT_TIMEOUT + self.SOCKET_TIMEOUT):
            log.warning("redis board %r: event subscription not ready yet", self.namespace)
        return self

    def close(self) -> None:
        """Stop the event thread; close the client unless it was given."""
        with self._life_lock:
            client, self._client = self._client, None
            if client is None:
                return
            self._stopping.set()
            try:
                client.publish(self._control, "stop")  # wakes the event thread at once
            except redis.RedisError:
                pass
            if self._listener not in (None, threading.current_thread()):
                self._listener.join(self.LISTEN_POLL + self.SOCKET_TIMEOUT)
            self._listener = None
            if self._given is None:
                client.close()
        self._wake(None)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _connection_uncertain(self) -> bool:
        return self._client is not None and not self._subscribed.is_set()

    def __repr__(self) -> str:
        return f"<RedisBoard {self.name!r} namespace={self.namespace!r} at {self._where()}>"

    def _where(self, key: str | None = None) -> Any:
        """Where the server is (host:port/db), or one connection setting."""
        kwargs = self._given.get_connection_kwargs() if self._given else self._connection
        if key is not None:
            return kwargs.get(key)
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    # -- calling the server -------------------------------------------------

    def _call(self, op: str, job_id: str | None, call: Callable[[], T], *, safe: bool) -> T:
        """Run one request, translating errors; ``safe`` ones (reads, idempotent
        writes) retry connection errors until ``retry_deadline``. Others retry
        only a server that refused them while loading its data."""
        if self._client is None:
            raise errors.BoardUnavailable(f"redis board {self.namespace!r} is closed")
        what = op if job_id is None else f"{op} of job {job_id!r}"
        try:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as err:
                if not self._retryable(err, safe):
                    raise
                log.info("redis board %r: %s failed (%s); retrying", self.namespace, what, err)
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(lambda e: self._retryable(e, safe)),
                wait=tenacity.wait_random_exponential(
                    multiplier=self.RETRY_INITIAL, max=self.RETRY_MAX
                ),
                stop=tenacity.stop_after_delay(self.retry_deadline),
                reraise=True,
            ):
                with attempt:
                    return call()
            raise AssertionError("unreachable")  # pragma: no cover
        except redis.AuthenticationError as err:
            user = self._where("username") or "default"
            raise errors.BoardUnavailable(
                f"redis board {self.namespace!r} at {self._where()}: authentication failed for "
                f"user {user!r} ({err}); check the password or ACL user of the board URL"
            ) from err
        except (redis.ConnectionError, redis.TimeoutError) as err:
            outcome = "" if safe else "; whether it took effect is unknown"
            raise errors.BoardUnavailable(
                f"redis board {self.namespace!r} at {self._where()}: {what} failed, the server "
                f"is unreachable ({err}){outcome}"
            ) from err
        except redis.ResponseError as err:
            raise self._refused(what, job_id, err) from err
        except redis.RedisError as err:
            raise errors.BoardError(
                f"redis board {self.namespace!r}: {what} failed: {err}"
            ) from err

    @staticmethod
    def _retryable(err: BaseException, safe: bool) -> bool:
        if isinstance(err, redis.BusyLoadingError):
            return True  # refused, not run: safe to send again
        return (
            safe
            and isinstance(err, redis.ConnectionError | redis.TimeoutError)
            and not isinstance(err, redis.AuthenticationError)
        )

    def _refused(
        self, what: str, job_id: str | None, err: redis.ResponseError
    ) -> errors.BoardError:
        """Translate a script's ``JB <CODE> <details>`` error reply."""
        text = str(err)
        code, _, rest = text.removeprefix("JB ").partition(" ")
        if not text.startswith("JB ") or code not in _REFUSALS:
            return errors.BoardError(f"redis board {self.namespace!r}: {what} refused: {text}")
        if code == "CORRUPT":
            return errors.InvalidJob(
                f"job {job_id!r}: stored field {rest!r} is corrupt; trash it with force",
                field=rest,
                job=job_id,
            )
        cls, template = _REFUSALS[code]
        return cls(template.format(job=repr(job_id), rest=rest, board=repr(self.name)))

    def _script(self, name: str, key: str, *args: Any) -> Any:
        return self._scripts[name](keys=[key], args=[self._prefix, *args])

    def _pipeline(self) -> Any:
        assert self._client is not None
        return self._client.pipeline(transaction=False)

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}job:{job_id}"

    # -- producers ----------------------------------------------------------

    def post(
        self,
        name: str,
        flow: str,
        store: Mapping[str, Any] | None = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        max_attempts: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Job:
        prio, attempts, store_json, details_json = self._validate_post(
            name, flow, store, priority, max_attempts, details
        )
        job_id = uuid.uuid4().hex
        args = (job_id, name, flow, store_json, details_json, prio.value, prio.rank, attempts)
        seq, created = self._call(
            "post",
            job_id,
            lambda: self._script("post", self._job_key(job_id), *args),
            safe=True,  # the id is made here: sending the same post twice adds one job
        )
        created_at = float(created)
        return Job(
            id=job_id,
            name=name,
            flow=flow,
            store=json.loads(store_json),
            priority=prio,
            created_at=created_at,
            updated_at=created_at,
            seq=int(seq),
            max_attempts=attempts,
            details=json.loads(details_json),
        )

    def get(self, job: JobRef) -> Job:
        job_id = self._job_id(job)

        def read() -> tuple[dict[Any, Any], tuple[int, int]]:
            pipe = self._pipeline()
            pipe.hgetall(self._job_key(job_id))
            pipe.time()
            raw, now = pipe.execute()
            return raw, now

        raw, now = self._call("get", job_id, read, safe=True)
        if not raw:
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
        return _decode_job(job_id, raw, _server_time(now))

    def iterjobs(
        self,
        only_unclaimed: bool = False,
        ensure_fresh: bool = False,
        *,
        states: Collection[JobState | str] | None = None,
        flow: str | None = None,
    ) -> Iterator[Job]:
        wanted = self._normalise_states(states, only_unclaimed)
        jobs = self._call("iterjobs", None, lambda: self._list(wanted, flow), safe=True)
        return iter(jobs)

    def _list(self, wanted: frozenset[JobState], flow: str | None) -> list[Job]:
        """Jobs in ``wanted`` states from the indexes (never a key scan), in claim order."""
        p = self._prefix
        pipe = self._pipeline()
        pipe.time()
        pipe.zrange(f"{p}leases", 0, -1)
        pipe.zrange(f"{p}finished", 0, -1)
        pipe.smembers(f"{p}flows")
        now_reply, leased, finished, flow_names = pipe.execute()
        now = _server_time(now_reply)
        ids: dict[str, None] = {}
        if JobState.WAITING in wanted:
            names = [flow] if flow is not None else sorted(_text(f) for f in flow_names)
            pipe = self._pipeline()
            for name in names:
                pipe.zrange(f"{p}waiting:{name}", 0, -1)
            for members in pipe.execute():
                ids.update(dict.fromkeys(_text(m) for m in members))
        if wanted & {JobState.WAITING, JobState.CLAIMED}:
            ids.update(dict.fromkeys(_text(m) for m in leased))
        if wanted & FINISHED_STATES:
            ids.update(dict.fromkeys(_text(m) for m in finished))
        jobs = []
        order = list(ids)
        for start in range(0, len(order), self.READ_BATCH):
            batch = order[start : start + self.READ_BATCH]
            pipe = self._pipeline()
            for job_id in batch:
                pipe.hgetall(self._job_key(job_id))
            for job_id, raw in zip(batch, pipe.execute(), strict=True):
                if not raw:
                    continue  # purged or expired meanwhile
                job = _decode_job(job_id, raw, now)
                if job.state in wanted and (flow is None or job.flow == flow):
                    jobs.append(job)
        jobs.sort(key=lambda j: (j.priority.rank, j.seq))
        return jobs

    @property
    def job_count(self) -> int:
        p = self._prefix

        def read() -> int:
            pipe = self._pipeline()
            pipe.smembers(f"{p}flows")
            pipe.zcard(f"{p}leases")
            flows, leased = pipe.execute()
            pipe = self._pipeline()
            for name in flows:
                pipe.zcard(f"{p}waiting:{_text(name)}")
            return leased + sum(pipe.execute())

        return self._call("job_count", None, read, safe=True)

    def cancel(self, job: JobRef) -> Job:
        job_id = self._job_id(job)
        raw = self._call(
            "cancel",
            job_id,
            lambda: self._script("cancel", self._job_key(job_id), job_id, repr(self.retention)),
            safe=False,
        )
        return _decode_job(job_id, _pairs(raw))

    # -- conductors ---------------------------------------------------------

    def _claimed(self, raw: list[Any], who: str, length: float, started: float) -> Claim:
        """Track the claim a script returned; a job whose record cannot be read
        is trashed at once (it could never run) and ``InvalidJob`` raised."""
        fields = _pairs(raw)
        job_id = fields.get("id", "?")
        try:
            job = _decode_job(job_id, fields)
        except errors.InvalidJob as err:
            self.trash(job_id, who, int(fields["token"]), reason=f"corrupt job record: {err}")
            raise
        claim = self._track(
            Claim(
                job_id=job.id,
                owner=who,
                token=job.token,
                lease=length,
                expires_at=job.lease_expires_at,
                deadline=started + length,
                job=job,
            )
        )
        if job.cancel_requested:
            self._mark_cancel(job.id)
        return claim

    def claim(self, job: JobRef, who: str, *, lease: float | None = None) -> Claim:
        job_id = self._job_id(job)
        self._check_owner_args(job_id, who, 0, False)
        length = self._lease_for(lease)
        started = self._local_clock()
        raw = self._call(
            "claim",
            job_id,
            lambda: self._script(
                "claim",
                self._job_key(job_id),
                job_id,
                who,
                repr(length),
                repr(self.retention),
                self.REAP_BATCH,
            ),
            safe=False,
        )
        return self._claimed(raw, who, length, started)

    def claim_next(
        self, who: str, flows: Collection[str] | None = None, *, lease: float | None = None
    ) -> Claim | None:
        self._check_owner_args("?", who, 0, False)
        length = self._lease_for(lease)
        if isinstance(flows, str):
            flows = [flows]
        which = ["*"] if flows is None else ["=", *flows]
        if flows is not None and len(which) == 1:
            return None
        args = (who, repr(length), repr(self.retention), self.REAP_BATCH, self.SKIP_LIMIT, *which)
        while True:
            started = self._local_clock()
            raw = self._call(
                "claim_next",
                None,
                lambda: self._script("claim_next", f"{self._prefix}leases", *args),
                safe=False,
            )
            if raw is None:
                return None
            if isinstance(raw, bytes | str):
                continue  # "again": a run of poison jobs was trashed; look further
            try:
                return self._claimed(raw, who, length, started)
            except errors.InvalidJob:
                log.exception("redis board %r: trashed an unreadable job", self.namespace)

    def renew(
        self, claims: Iterable[Claim], *, lease: float | None = None
    ) -> dict[str, Claim | None]:
        length = self._lease_for(lease)
        claims = list(claims)
        if not claims:
            return {}
        args: list[Any] = [repr(length)]
        for claim in claims:
            args += [claim.job_id, claim.owner, claim.token]
        started = self._local_clock()
        reply = self._call(
            "renew",
            None,
            lambda: self._script("renew", f"{self._prefix}leases", *args),
            safe=True,  # extending a lease twice is the same as once
        )
        now = float(reply[0])
        out: dict[str, Claim | None] = {}
        for claim, status in zip(claims, reply[1:], strict=True):
            if not status:
                out[claim.job_id] = None
                continue
            if status == 2:
                self._mark_cancel(claim.job_id)
            out[claim.job_id] = replace(
                claim, lease=length, expires_at=now + length, deadline=started + length
            )
        self._apply_renewals(out)
        return out

    def _store_progress(
        self, job_id: str, who: str, token: int, atom_name: str, encoded: str
    ) -> None:
        self._call(
            "save_progress",
            job_id,
            lambda: self._script(
                "save_progress", self._job_key(job_id), job_id, who, token, 0, atom_name, encoded
            ),
            safe=False,
        )

    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._job_id(job)

        def read() -> tuple[int, dict[Any, Any]]:
            pipe = self._pipeline()
            pipe.exists(self._job_key(job_id))
            pipe.hgetall(f"{self._prefix}progress:{job_id}")
            exists, records = pipe.execute()
            return exists, records

        exists, records = self._call("load_progress", job_id, read, safe=True)
        if not exists:
            raise errors.JobNotFound(f"no job {job_id!r} on board {self.name!r}")
        out = {}
        for atom, text in records.items():
            name = _text(atom)
            out[name] = _field({name: _text(text)}, job_id, name, _json_object)
        return out

    def _finish(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        state: JobState,
        force: bool,
        result_json: str | None,
        error: str | None,
        event: str,
    ) -> Job:
        raw = self._call(
            _OP_OF_EVENT[event],
            job_id,
            lambda: self._script(
                "finish",
                self._job_key(job_id),
                job_id,
                who,
                "" if token is None else token,
                int(force),
                state.value,
                event,
                repr(self.retention),
                int(result_json is not None),
                result_json or "",
                int(error is not None),
                error or "",
            ),
            safe=False,
        )
        self._untrack(job_id)
        return _decode_job(job_id, _pairs(raw))

    def _release_claim(
        self,
        job_id: str,
        who: str,
        token: int | None,
        *,
        reason: str | None,
        force: bool,
        refund: bool = False,
    ) -> Job:
        raw = self._call(
            "abandon",
            job_id,
            lambda: self._script(
                "abandon",
                self._job_key(job_id),
                job_id,
                who,
                "" if token is None else token,
                int(force),
                int(reason is not None),
                reason or "",
                int(refund),
            ),
            safe=False,
        )
        self._untrack(job_id)
        return _decode_job(job_id, _pairs(raw))

    def wait(self, timeout: float | None = None, *, flows: Collection[str] | None = None) -> bool:
        """Block until a job of ``flows`` may be waiting; False on timeout.

        Woken by posted / abandoned / expired events. Between events it checks
        once per lease length, because a lease that simply runs out publishes
        nothing until some claim reaps it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = None if flows is None else frozenset([flows] if isinstance(flows, str) else flows)
        entry = (wanted, threading.Event())
        with self._waiters_lock:
            self._waiters.append(entry)
        try:
            while True:
                entry[1].clear()
                if self._available(wanted):
                    return True
                pause = self.lease
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return False
                if not self._subscribed.is_set():
                    pause = min(pause, self.LISTEN_BACKOFF_MAX)
                if not entry[1].wait(pause) and deadline is not None:
                    if time.monotonic() >= deadline:
                        return False
        finally:
            with self._waiters_lock:
                self._waiters.remove(entry)

    def _available(self, flows: frozenset[str] | None) -> bool:
        """One round trip: a waiting job of ``flows``, or a lease already run out."""
        p = self._prefix
        if flows is not None and not flows:
            return False

        def read() -> list[Any]:
            pipe = self._pipeline()
            pipe.time()
            pipe.zrange(f"{p}leases", 0, 0, withscores=True)
            if flows is None:
                pipe.scard(f"{p}flows")
            else:
                pipe.exists(*(f"{p}waiting:{f}" for f in flows))
            return pipe.execute()

        now, head, *waiting = self._call("wait", None, read, safe=True)
        if waiting and waiting[0]:
            return True
        return bool(head) and head[0][1] <= _server_time(now)

    # -- events -------------------------------------------------------------

    def _listen(self, client: redis.Redis) -> None:
        """The event thread: subscribe, feed events to ``_emit``, reconnect with backoff."""
        delay = self.LISTEN_BACKOFF
        while not self._stopping.is_set():
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(self._channel, self._control)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=self.LISTEN_POLL)
                    if message is None or _text(message["channel"]) != self._channel:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        self._wake(None)  # events may have been missed while away
                        delay = self.LISTEN_BACKOFF
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
                if self._stopping.is_set():
                    break
                self._subscribed.clear()
                self._wake(None)
                log.warning(
                    "redis board %r: event link lost (%s); reconnecting in %.2fs",
                    self.namespace,
                    err,
                    delay,
                )
                self._stopping.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.LISTEN_BACKOFF_MAX)
            except Exception:  # never let the event thread die silently
                log.exception("redis board %r: event thread error", self.namespace)
                self._subscribed.clear()
                self._stopping.wait(delay)
                delay = min(delay * 2, self.LISTEN_BACKOFF_MAX)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
        self._subscribed.clear()

    def _on_message(self, data: bytes | str) -> None:
        try:
            payload = json.loads(data)
            event = BoardEvent(
                str(payload["kind"]), payload.get("job"), dict(payload.get("data") or {})
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("redis board %r: ignoring a malformed event %r", self.namespace, data)
            return
        if event.kind in _WAKE_KINDS:
            self._wake(event.data.get("flow"))
        self._emit(event)

    def _wake(self, flow: str | None) -> None:
        """Wake the waiters interested in ``flow`` (all of them for None)."""
        with self._waiters_lock:
            for flows, event in self._waiters:
                if flow is None or flows is None or flow in flows:
                    event.set()

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
        self._call(
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
        horizon = _server_time(now) - self.DEFAULT_ENTITY_TTL
        texts = {_text(k): _text(v) for k, v in metadata.items()}
        out = []
        for raw_name, last_seen in seen:
            name = _text(raw_name)
            if last_seen < horizon or name not in texts:
                continue
            try:
                info = _json_object(texts[name])
            except ValueError:
                log.warning("redis board %r: entity %r has corrupt metadata", self.namespace, name)
                info = {}
            out.append(Entity(name, kind, info, last_seen))
        return sorted(out, key=lambda e: e.name)

    # -- operators ----------------------------------------------------------

    def _purge(self, wanted: frozenset[JobState], older_than: float) -> int:
        names = sorted(s.value for s in wanted)

        def batch(offset: int) -> list[int]:
            return self._script(
                "purge",
                f"{self._prefix}finished",
                repr(float(older_than)),
                offset,
                self.PURGE_BATCH,
                *names,
            )

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

    def counters(self) -> dict[str, int]:
        raw = self._call(
            "counters", None, lambda: self._client.hgetall(f"{self._prefix}counters"), safe=True
        )
        return {_text(k): int(v) for k, v in raw.items()}


def _float_option(value: Any, key: str, url: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise errors.BadURL(
            f"board URL {redact_url(url)!r}: option {key!r} must be a number, got {value!r}"
        ) from err


