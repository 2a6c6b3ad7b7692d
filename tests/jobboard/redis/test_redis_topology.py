"""Sentinel and Cluster board URLs: parsing, errors and what messages show (no server)."""

from __future__ import annotations

import pytest

import jobboard
from jobboard import BadURL
from jobboard.redis import RedisBoard
from jobboard.redis.topology import where

SENTINEL = (
    "rediss+sentinel://app:m-pass@10.0.0.1:26379,10.0.0.2,[::1]:26380/prod-master/2"
    "?namespace=jobs&sentinel_username=watch&sentinel_password=s-pass&ssl_cert_reqs=none"
)


def test_sentinel_url_names_sentinels_service_db_and_both_credentials():
    board = RedisBoard.from_url(SENTINEL)
    conn = board._connection
    assert conn["sentinels"] == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)]
    assert (conn["service"], conn["db"]) == ("prod-master", 2)
    assert (conn["username"], conn["password"]) == ("app", "m-pass")
    assert conn["sentinel_auth"] == {"username": "watch", "password": "s-pass"}
    assert conn["ssl"] is True and conn["ssl_cert_reqs"] == "none"
    assert board.namespace == "jobs"


def test_cluster_url_names_its_seed_nodes_and_takes_ssl_as_an_option():
    board = RedisBoard.from_url("redis+cluster://n1:7000,n2/?namespace=a&ssl=true")
    assert board._connection["startup_nodes"] == [("n1", 7000), ("n2", 6379)]
    assert board._connection["ssl"] is True
    assert "db" not in board._connection


def test_the_new_schemes_resolve_to_the_redis_board():
    for scheme in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        assert jobboard.backend_for(scheme) is RedisBoard


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:1/?namespace=x", "names its service"),
        ("redis+sentinel://h:1/a/b/c?namespace=x", "names its service"),
        ("redis+sentinel://h:1/svc/x?namespace=x", "bad database"),
        ("redis+cluster://h:1/3?namespace=x", "only database 0"),
        ("redis://h:1,h:2/0", "one server only"),
        ("redis://h:1/0?sentinel_password=zz", r"need a redis\+sentinel"),
        ("redis+sentinel://h:port/svc", "bad address"),
        ("redis+cluster://h:1/?ssl=maybe", "'ssl' must be true or false"),
        ("redis+mesh://h:1/", "unknown Redis URL scheme"),
        ("redis+sentinel://h:1/svc?ssl_ca_certs=/ca.pem", "need rediss://"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, says):
    with pytest.raises(BadURL, match=says):
        RedisBoard.from_url(url)


def test_messages_never_show_either_password():
    bad = SENTINEL.replace("namespace=jobs", "namespace=jobs&lease=soon")
    with pytest.raises(BadURL) as caught:
        RedisBoard.from_url(bad)
    text = str(caught.value)
    assert "lease" in text and "m-pass" not in text and "s-pass" not in text
    shown = jobboard.redact_url(SENTINEL)
    assert "m-pass" not in shown and "s-pass" not in shown and "sentinel_password=***" in shown


def test_where_names_the_sentinel_service_before_any_master_is_known():
    board = RedisBoard.from_url(SENTINEL)
    text = board._where()
    assert "prod-master" in text and "10.0.0.1:26379" in text and "[::1]:26380" in text
    assert "?" not in text and "pass" not in text


def test_where_names_a_given_sentinel_client_not_question_marks():
    from redis.sentinel import Sentinel

    client = Sentinel([("127.0.0.1", 1)]).master_for("svc", db=4)
    client.connection_pool.proxy.master_address = ("10.1.1.1", 6380)  # as after a lookup
    assert where(client, {}, "jb:{x}:seq") == "master 10.1.1.1:6380/4 of Sentinel service 'svc'"


def test_where_names_the_cluster_seeds_before_connecting():
    board = RedisBoard.from_url("redis+cluster://n1:7000,n2:7001/?namespace=a")
    assert board._where() == "cluster n1:7000,n2:7001"


def test_tls_sentinel_clients_speak_tls_to_the_sentinels_and_the_master():
    from redis.sentinel import SentinelManagedSSLConnection

    from jobboard.redis.topology import make_client

    board = RedisBoard.from_url(SENTINEL)
    client = make_client(board._connection, health_check_interval=10)
    pool = client.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["password"] == "m-pass"
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert sentinel["ssl_cert_reqs"] == "none" and sentinel["password"] == "s-pass"
    assert sentinel["username"] == "watch"
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_class.__name__ == (
        "SSLConnection"
    )


def test_the_commands_last_line_of_defence_masks_the_sentinel_password_too():
    from jobboard.envopts import scrub

    text = scrub("failed: auth s-pass for m-pass", SENTINEL)
    assert "s-pass" not in text and "m-pass" not in text


def test_a_cluster_nobody_answers_is_unavailable_naming_its_nodes():
    from tests.servers import free_port

    port = free_port()
    with pytest.raises(jobboard.BoardUnavailable, match=f"redis cluster 127.0.0.1:{port}"):
        jobboard.connect(f"redis+cluster://127.0.0.1:{port}/?namespace=x&connect_timeout=0.5")
