"""How a Redis board reaches its data: one server, a Sentinel-watched master, or a Cluster.

The board's URL scheme says which (``rediss`` and ``ssl=true`` add TLS):

* ``redis://[user:password@]host:port/db`` — one server;
* ``redis+sentinel://[user:password@]h1:26379,h2:26379/SERVICE[/DB]`` — the
  master of the Sentinel service ``SERVICE``, found by asking the sentinels
  (``sentinel_username`` / ``sentinel_password`` when they require a login;
  the address's credentials are the master's). After a failover the client
  asks again and follows the new master;
* ``redis+cluster://[user:password@]h1:7000,h2:7001/`` — a Redis Cluster, the
  listed nodes only used to discover the others. Every key of a namespace
  carries the hash tag ``{namespace}``, so a board lives on one shard and many
  namespaces spread over the cluster.

:func:`address` reads the address part of a URL into connection settings,
:func:`make_client` builds the client from them, and :func:`where` names the
server a client talks to, for messages. No password ever appears in what
:func:`where` returns. The client never resends a write by itself (no
client-level retries): the board decides what is safe to send again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel

from jobboard import errors
from jobboard.urls import redact_url

log = logging.getLogger("jobboard.redis")

__all__ = [
    "KINDS",
    "REFUSED_NOT_RUN",
    "address",
    "make_client",
    "pipeline",
    "split_scheme",
    "subscriber",
    "where",
]

#: The kinds of deployment, by the suffix of the URL scheme (``redis+<kind>``).
KINDS = ("server", "sentinel", "cluster")
#: Default ports of a sentinel and of a server or cluster node.
SENTINEL_PORT = 26379
SERVER_PORT = 6379
#: Options of this module (taken out of the URL's query before the board sees it).
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
#: Errors that say a command was refused before it ran (safe to send again): the
#: server is loading, the cluster is failing over a shard or moving the slot, or
#: the cluster client found no node to send it to.
REFUSED_NOT_RUN: tuple[type[Exception], ...] = (
    redis.BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def split_scheme(scheme: str) -> tuple[str, bool]:
    """``(kind, tls)`` of a URL scheme: ``rediss+sentinel`` is ``("sentinel", True)``."""
    base, _, kind = scheme.lower().partition("+")
    if base not in ("redis", "rediss") or (kind or "server") not in KINDS:
        raise errors.BadURL(
            f"unknown Redis URL scheme {scheme!r}; use redis, rediss, redis+sentinel, "
            "rediss+sentinel, redis+cluster or rediss+cluster"
        )
    return kind or "server", base == "rediss"


def _hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    """The ``host:port`` list of a URL's address (``[::1]:port`` for IPv6)."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    out = []
    for item in netloc.split(","):
        match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", item)
        if not match:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: bad address {item!r}; "
                "expected host:port[,host:port...]"
            )
        host = match.group(1) or match.group(3)
        port = match.group(2) or match.group(4)
        out.append((host, int(port) if port else default_port))
    return out


def address(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """The connection settings of a URL's scheme, address and path; takes the
    options of this module (sentinel credentials, ``ssl``) out of ``options``.

    The result holds what ``redis.Redis`` takes (``host``, ``port``, ``db``,
    ``username``, ``password``, ``ssl``) plus, for Sentinel, ``sentinels``,
    ``service`` and ``sentinel_auth``, and for Cluster ``startup_nodes``.
    """
    parts = urlsplit(url)
    kind, tls = split_scheme(parts.scheme)
    if "ssl" in options:
        flag = str(options.pop("ssl")).lower()
        if flag not in _TRUE | _FALSE:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: option 'ssl' must be true or false, got {flag!r}"
            )
        tls = tls or flag in _TRUE
    segments = [unquote(s) for s in parts.path.split("/") if s]
    connection: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    if tls:
        connection["ssl"] = True
    sentinel_auth = {
        key.removeprefix("sentinel_"): options.pop(key)
        for key in SENTINEL_OPTIONS
        if key in options
    }
    if sentinel_auth and kind != "sentinel":
        raise errors.BadURL(
            f"board URL {redact_url(url)!r}: options "
            f"{sorted('sentinel_' + key for key in sentinel_auth)} "
            "need a redis+sentinel:// URL"
        )
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: a Sentinel URL names its service: "
                "redis+sentinel://host:26379,host:26379/SERVICE[/DB]"
            )
        connection.update(
            sentinels=_hosts(url, SENTINEL_PORT),
            service=segments[0],
            sentinel_auth=sentinel_auth,
            db=_db(url, segments[1:]),
        )
    elif kind == "cluster":
        if _db(url, segments):
            raise errors.BadURL(
                f"board URL {redact_url(url)!r}: a Redis Cluster has only database 0; "
                "give each board its own namespace= instead"
            )
        connection["startup_nodes"] = _hosts(url, SERVER_PORT)
    else:
        if not parts.netloc.rpartition("@")[2]:
            host, port = "127.0.0.1", SERVER_PORT
        else:
            hosts = _hosts(url, SERVER_PORT)
            if len(hosts) != 1:
                raise errors.BadURL(
                    f"board URL {redact_url(url)!r}: one server only; for several use "
                    "redis+sentinel:// or redis+cluster://"
                )
            host, port = hosts[0]
        connection.update(host=host, port=port, db=_db(url, segments))
    return connection


def _db(url: str, segments: list[str]) -> int:
    if not segments:
        return 0
    try:
        if len(segments) > 1:
            raise ValueError(f"path /{'/'.join(segments)} has too many parts")
        return int(segments[0])
    except ValueError as err:
        raise errors.BadURL(f"board URL {redact_url(url)!r}: bad database ({err})") from err


def make_client(
    connection: Mapping[str, Any],
    *,
    health_check_interval: float,
    on_connect: Callable[[Any], None] | None = None,
) -> redis.Redis:
    """A client for the connection settings :func:`address` made (and the board added:
    timeouts, TLS files), sending each command once.

    For a Cluster it is a ``RedisCluster``, typed as ``redis.Redis``: it offers the
    same commands, scripts, pipelines and pub/sub the board uses."""
    settings: dict[str, Any] = dict(connection, health_check_interval=health_check_interval)
    sentinels = settings.pop("sentinels", None)
    service = settings.pop("service", None)
    sentinel_auth = settings.pop("sentinel_auth", None) or {}
    startup_nodes = settings.pop("startup_nodes", None)
    once = Retry(NoBackoff(), 0)  # writes are never resent blindly
    if on_connect is not None and startup_nodes is None:
        # Run on every new connection instead of the plain handshake (it does that first).
        settings["redis_connect_func"] = on_connect
    if startup_nodes is not None:
        for key in ("host", "port", "db"):
            settings.pop(key, None)
        try:  # the client reads the slot map and the command table as it is made
            cluster = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in startup_nodes],
                retry=once,
                require_full_coverage=False,  # a namespace works while its own shard does
                **settings,
            )
        except (redis.RedisError, RedisClusterException) as err:
            raise errors.BoardUnavailable(
                f"redis cluster {_addresses(startup_nodes)}: cannot read the cluster's "
                f"layout ({err})"
            ) from err
        return cast(redis.Redis, cluster)
    if sentinels is not None:
        for key in ("host", "port"):
            settings.pop(key, None)
        sentinel_kwargs = {
            key: value
            for key, value in settings.items()
            if key.startswith(("socket_", "ssl")) and value is not None
        }
        sentinel_kwargs.update((k, v) for k, v in sentinel_auth.items() if v)
        sentinel_kwargs["retry"] = once
        manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        client: redis.Redis = manager.master_for(service, retry=once, **settings)
        return client
    return redis.Redis(**settings, retry=once)


def where(client: Any, connection: Mapping[str, Any], namespace_key: str) -> str:
    """The server ``client`` talks to for keys like ``namespace_key``, for messages:
    ``host:port/db``, ``master host:port/db of Sentinel service S``, or ``cluster node
    host:port``. Uses what the client already knows; asks no server."""
    if isinstance(client, RedisCluster):
        try:
            node = client.nodes_manager.get_node_from_slot(client.keyslot(namespace_key))
            return f"cluster node {node.host}:{node.port}"
        except (redis.RedisError, IndexError, KeyError, AttributeError):
            return "cluster " + _addresses(connection.get("startup_nodes"))
    if "startup_nodes" in connection:
        return "cluster " + _addresses(connection["startup_nodes"])
    pool = getattr(client, "connection_pool", None)
    service = connection.get("service") or getattr(pool, "service_name", None)
    if service is not None:
        known = getattr(pool, "master_address", None)
        db = connection.get("db", getattr(pool, "connection_kwargs", {}).get("db", 0))
        master = f"{_addresses([known])}/{db}" if known else "(not found yet)"
        sentinels = _addresses(connection.get("sentinels"))
        source = f" via sentinels {sentinels}" if sentinels else ""
        return f"master {master} of Sentinel service {service!r}{source}"
    if "host" not in connection and client is not None:
        connection = client.get_connection_kwargs()
    return f"{connection.get('host', '?')}:{connection.get('port', '?')}/{connection.get('db', 0)}"


def _addresses(nodes: Any) -> str:
    """``host:port,host:port`` (``[::1]:port`` for IPv6) of a list of pairs."""
    return ",".join(f"[{h}]:{p}" if ":" in str(h) else f"{h}:{p}" for h, p in nodes or [])


def pipeline(client: redis.Redis, key: str) -> Any:
    """A non-transactional pipeline of ``client``. On a Cluster, TIME (which names
    no key, so a cluster pipeline refuses it) is read by a one-line script on
    ``key``'s shard: the board's clock is the clock of the server holding it."""
    pipe = client.pipeline(transaction=False)
    if isinstance(client, RedisCluster):
        return _ShardPipeline(client, pipe, key)
    return pipe


class _ShardPipeline:
    """A cluster pipeline whose ``time()`` is read from the shard of one key.

    The clock is read by a direct script call right after the pipeline (a
    cluster pipeline sends keyless commands, scripts included, to a fixed
    default node, which may be the one that just died): one more round trip.
    """

    _TIME = "return redis.call('TIME')"

    def __init__(self, client: RedisCluster, pipe: Any, key: str) -> None:
        self._client = client
        self._pipe = pipe
        self._key = key
        self._times: list[int] = []

    def time(self) -> _ShardPipeline:
        self._times.append(len(self._pipe) + len(self._times))
        return self

    def execute(self) -> list[Any]:
        replies: list[Any] = self._pipe.execute()
        if self._times:
            seconds, micros = self._client.execute_command("EVAL", self._TIME, 1, self._key)
            for index in self._times:
                replies.insert(index, (int(seconds), int(micros)))
            self._times.clear()
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def subscriber(client: redis.Redis, *, refresh: bool) -> Any:
    """A pub/sub connection of ``client``. On a Cluster it goes to the node serving
    the channel's slot; ``refresh`` (after the link failed) first re-reads which
    node that is, since a failover may have moved the slot to a promoted replica."""
    if refresh and isinstance(client, RedisCluster):
        try:
            client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException, OSError) as err:
            log.info("redis cluster: the slot map could not be read (%s)", err)
    return client.pubsub()
