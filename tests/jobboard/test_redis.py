"""Redis-specific board behaviour: real servers restarted, killed and paused;
authentication and TLS; the reaper inside claims; round trips; pub/sub; key layout."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import jobboard
from jobboard import (
    BadURL,
    BoardUnavailable,
    ClaimStatus,
    InvalidJob,
    JobState,
    NotOwner,
    unique_owner,
)
from jobboard.redis import RedisBoard
from tests.helpers import wait_until
from tests.jobboard.redis.helpers import (
    acl_user_url,
    counting_round_trips,
    namespace,
    prefix,
    raw_client,
)
from tests.servers import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the session's server, to look at (and damage) keys."""
    yield from raw_client(redis_url)


@pytest.fixture
def private_board(redis_server_factory):
    """Open boards on a private server (command counts see nobody else's traffic)."""
    opened: list[jobboard.JobBoard] = []

    def open_board(server: RedisServer | None = None, **options: Any):
        server = server or redis_server_factory()
        options.setdefault("namespace", namespace())
        board = jobboard.connect(server.url, **options)
        opened.append(board)
        return board, server

    yield open_board
    for board in opened:
        board.close()


def _command_calls(client: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in client.info("commandstats").items()}


# -- URLs and clients ---------------------------------------------------------


def test_url_options_are_parsed_and_checked():
    board = RedisBoard.from_url(
        "redis://alice:s%40cret@127.0.0.1:6390/3?namespace=ns1&lease=2.5&max_attempts=3"
        "&socket_timeout=1&connect_timeout=0.5&retry_deadline=2"
    )
    conn = board._connection
    assert (conn["host"], conn["port"], conn["db"]) == ("127.0.0.1", 6390, 3)
    assert (conn["username"], conn["password"]) == ("alice", "s@cret")
    assert (conn["socket_timeout"], conn["socket_connect_timeout"]) == (1.0, 0.5)
    assert (board.namespace, board.lease, board.max_attempts) == ("ns1", 2.5, 3)
    assert board.retry_deadline == 2.0
    assert "s@cret" not in repr(board)

    tls = RedisBoard.from_url("rediss://h:7000/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=optional")
    assert tls._connection["ssl"] is True
    assert tls._connection["ssl_ca_certs"] == "/ca.pem"
    assert tls._connection["ssl_cert_reqs"] == "optional"

    for url, word in [
        ("redis://h/0?ssl_ca_certs=/ca.pem", "rediss"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis://h/0?bogus=1", "bogus"),
        ("redis://h/0?namespace=a{b}", "namespace"),
        ("redis://h/0?lease=soon", "lease"),
        ("redis://h/0?socket_timeout=never", "socket_timeout"),
        ("redis://h:port/0", "port"),
        ("redis://u:topsecret@h/x", "database"),
    ]:
        with pytest.raises(BadURL, match=word) as info:
            RedisBoard.from_url(url)
        assert "topsecret" not in str(info.value)


def test_given_client_is_used_and_never_closed(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    board = jobboard.connect(redis_url, client=client, namespace=namespace())
    try:
        job = board.post("j", "f", {"a": 1})
        who = unique_owner("c")
        claim = board.claim_next(who)
        board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
        assert board.load_progress(job) == {"t": {"state": "SUCCESS"}}
        done = board.consume(claim, who, claim.token, result=[1])
        assert done.state is JobState.COMPLETE and done.result == [1]
        assert [j.id for j in board.iterjobs(states=["complete"])] == [job.id]
    finally:
        board.close()
    assert client.ping() is True  # still open: the board did not own it
    client.close()


@pytest.mark.skipif(not RedisServer.tls_available(), reason="no openssl command")
def test_tls_connection(redis_server_factory):
    server = redis_server_factory(tls=True)
    board = jobboard.connect(server.url, namespace=namespace())
    try:
        job = board.post("j", "f")
        assert board.claim_next(unique_owner("c")).job_id == job.id
    finally:
        board.close()
    untrusted = server.url.split("?")[0]  # no CA: the self-made certificate is refused
    with pytest.raises(BoardUnavailable, match="unreachable"):
        jobboard.connect(untrusted, namespace=namespace(), retry_deadline=0.2)


# -- authentication -----------------------------------------------------------


def test_password_auth_and_a_wrong_password(redis_server_factory):
    server = redis_server_factory(password="right-pw")
    board = jobboard.connect(server.url, namespace=namespace())
    try:
        job = board.post("j", "f")
        assert board.get(job).state is JobState.WAITING
    finally:
        board.close()
    for url in (server.url.replace("right-pw", "wrong-pw"), f"redis://127.0.0.1:{server.port}/0"):
        started = time.monotonic()
        with pytest.raises(BoardUnavailable, match="authentication failed") as info:
            jobboard.connect(url, namespace=namespace())
        assert "wrong-pw" not in str(info.value)
        assert time.monotonic() - started < 2  # not retried: a bad password stays bad


def test_acl_user(redis_server_factory):
    server = redis_server_factory(password="admin-pw")
    url = acl_user_url(server)
    ns = namespace()
    worker, producer = jobboard.connect(url, namespace=ns), jobboard.connect(url, namespace=ns)
    try:
        kinds: list[str] = []
        producer.add_listener(lambda event: kinds.append(event.kind))  # an observer
        woke = threading.Event()
        thread = threading.Thread(target=lambda: worker.wait(timeout=10) and woke.set())
        thread.start()
        job = producer.post("j", "f")
        assert woke.wait(10), "the ACL user's event subscription did not wake wait()"
        thread.join(5)
        claim = worker.claim_next(unique_owner("c"))
        assert claim.job_id == job.id
        worker.consume(claim, claim.owner, claim.token)
        # The observer hears the owner's events too (a plain subscription: no pattern).
        wait_until(lambda: "consumed" in kinds)
        assert kinds == ["posted", "claimed", "consumed"]
    finally:
        worker.close()
        producer.close()
    with pytest.raises(BoardUnavailable, match="authentication failed for user 'conductor'"):
        jobboard.connect(url.replace("worker-pw", "nope"), namespace=ns)


# -- server restarts and failures ---------------------------------------------


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_restart_of_persistent_server_keeps_jobs_claims_and_progress(
    private_board, redis_server_factory, hard
):
    board, server = private_board(redis_server_factory(persistent=True), lease=30)
    operator, _ = private_board(server, namespace=board.namespace)
    jobs = [board.post(f"j{i}", "f", {"i": i}) for i in range(3)]
    who = unique_owner("c")
    claim = board.claim_next(who)
    board.save_progress(claim, who, claim.token, "t1", {"state": "SUCCESS", "result": 1})

    server.restart(hard=hard)

    # Then reads reconnect (retried) and find everything as it was.
    assert board.get(claim.job_id).owner == who
    assert board.load_progress(claim) == {"t1": {"state": "SUCCESS", "result": 1}}
    assert [j.id for j in board.iterjobs(only_unclaimed=True)] == [jobs[1].id, jobs[2].id]
    # And fenced writes work on the same claim.
    assert board.renew([claim])[claim.job_id] is not None
    board.save_progress(claim, who, claim.token, "t2", {"state": "SUCCESS"})
    board.consume(claim, who, claim.token, result="ok")
    assert board.get(claim.job_id).result == "ok"
    # And the event link is back: a forced abandon reaches the owner.
    second = board.claim_next(who)
    wait_until(lambda: board.claim_status(second) is ClaimStatus.OWNED, timeout=10)
    operator.abandon(second, "operator", force=True)
    wait_until(lambda: board.claim_status(second) is ClaimStatus.LOST, timeout=10)


def test_killed_server_gives_board_unavailable_promptly(private_board):
    board, server = private_board(retry_deadline=1.0)
    job = board.post("j", "f")
    who = unique_owner("c")
    claim = board.claim(job, who)

    server.kill()
    started = time.monotonic()

    with pytest.raises(BoardUnavailable, match="claim_next failed, the server is unreachable"):
        board.claim_next(who)
    with pytest.raises(BoardUnavailable, match=f"consume of job '{job.id}'") as info:
        board.consume(job, who, claim.token)
    assert "unknown" in str(info.value)  # a write's outcome cannot be known
    with pytest.raises(BoardUnavailable, match="get of job"):
        board.get(job)  # a read: retried up to the deadline, then given up
    assert time.monotonic() - started < 8
    wait_until(lambda: board.claim_status(claim) is ClaimStatus.UNCERTAIN, timeout=5)
    started = time.monotonic()
    board.close()
    assert time.monotonic() - started < 5


def test_paused_server_times_out_instead_of_hanging(private_board):
    board, server = private_board(socket_timeout=0.5, retry_deadline=0.5)
    board.post("j", "f")
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BoardUnavailable, match="claim_next"):
            board.claim_next(unique_owner("c"))
        with pytest.raises(BoardUnavailable, match="iterjobs"):
            list(board.iterjobs())
        assert time.monotonic() - started < 6
    finally:
        server.resume()
    assert board.claim_next(unique_owner("c")) is not None


def test_a_post_whose_reply_was_lost_is_resent_and_adds_one_job(redis_board_factory, monkeypatch):
    board = redis_board_factory()
    script, replies = board._scripts["post"], []

    def reply_lost_once(*args: Any, **kwargs: Any) -> Any:
        replies.append(script(*args, **kwargs))  # the server ran it...
        if len(replies) == 1:
            raise redis.ConnectionError("connection reset")  # ...but the reply was lost
        return replies[-1]

    monkeypatch.setitem(board._scripts, "post", reply_lost_once)
    job = board.post("j", "f", {"a": 1})

    assert len(replies) == 2
    first, again = (reply[1] for reply in replies)  # {gen, the job's hash}
    assert first == again  # the resent post returned the job the first one added
    assert [j.id for j in board.iterjobs()] == [job.id]
    assert board.counters()["posted"] == 1


# -- leases, renewals and round trips -----------------------------------------


def test_expired_lease_is_reclaimed_inside_claim_next(redis_board_factory, raw):
    board = redis_board_factory(lease=0.3)
    dead = redis_board_factory(lease=0.3)
    job = board.post("j", "f")
    old = dead.claim_next(unique_owner("dead"))
    dead.close()  # the owner is gone: nobody renews and no reaper runs anywhere
    key = f"{prefix(board)}job:{job.id}"

    wait_until(lambda: board.get(job).state is JobState.WAITING, timeout=5)
    # Reads report the job waiting, yet nothing has touched it in the server.
    assert raw.hget(key, "state") == b"claimed"
    assert raw.zscore(f"{prefix(board)}leases", job.id) is not None

    events: list[jobboard.BoardEvent] = []
    board.add_listener(events.append)
    new = board.claim_next(unique_owner("next"))

    assert new is not None and new.job_id == job.id
    assert new.token == old.token + 1
    assert board.counters()["expired"] == 1
    wait_until(lambda: [e.kind for e in events if e.job_id == job.id] == ["expired", "claimed"])


def test_renew_of_50_claims_is_one_round_trip(private_board, monkeypatch):
    board, server = private_board()
    who = unique_owner("c")
    claims = [board.claim(board.post(f"j{i}", "f"), who) for i in range(50)]
    lost = claims[7]
    board.abandon(lost, who, lost.token)
    board.renew(claims[:1])  # loads the script into the fresh server
    admin = redis.Redis(port=server.port)
    before = _command_calls(admin)

    with counting_round_trips(board, monkeypatch) as trips:
        renewed = board.renew(claims, lease=20)

    after = _command_calls(admin)
    admin.close()
    assert trips.count == 1
    assert after["evalsha"] - before.get("evalsha", 0) == 1
    assert renewed.pop(lost.job_id) is None
    assert len(renewed) == 49 and all(c is not None and c.lease == 20 for c in renewed.values())


def test_claim_next_cost_does_not_grow_with_the_backlog(private_board):
    small, server = private_board()
    large, _ = private_board(server)
    small.post("j1", "f")
    small.post("j2", "f")
    small.post("warm-up", "f", priority="high")
    assert small.claim_next(unique_owner("c")) is not None  # loads the script
    for i in range(1000):
        large.post(f"j{i}", "f", priority="low" if i % 2 else "high")
    # The first claim of a board also notes when its first lease ends (see _lib.lua).
    assert large.claim_next(unique_owner("c")) is not None
    admin = redis.Redis(port=server.port)

    def commands_of_one_claim(board: jobboard.JobBoard) -> int:
        before = admin.info("stats")["total_commands_processed"]
        assert board.claim_next(unique_owner("c")) is not None
        return admin.info("stats")["total_commands_processed"] - before

    assert commands_of_one_claim(small) == commands_of_one_claim(large)
    admin.close()


def test_wait_does_not_poll(redis_board_factory, monkeypatch):
    waiter = redis_board_factory(lease=30)
    poster = redis_board_factory()
    waiter._follow_everything()  # a waiter on every flow hears every event (asked once)
    with counting_round_trips(waiter, monkeypatch) as trips:
        assert waiter.wait(timeout=0.5) is False
        assert trips.count == 1  # one availability check, then blocked on events

        woke = threading.Event()
        thread = threading.Thread(target=lambda: waiter.wait(10, flows=["a"]) and woke.set())
        thread.start()
        wait_until(lambda: trips.count >= 2)  # the waiter checked once (then blocks)
        for _ in range(5):
            poster.post("other", "b")  # other flows do not wake it
        poster.post("mine", "a")
        assert woke.wait(10)
        thread.join(5)
    assert trips.count == 3  # woken once, by the post of its flow


# -- events reach owners without round trips ----------------------------------


def test_forced_abandon_reaches_the_owner_without_a_round_trip(redis_board_factory, monkeypatch):
    owner_board = redis_board_factory()
    operator = redis_board_factory()
    job = operator.post("j", "f")
    claim = owner_board.claim(job, unique_owner("owner"))
    assert owner_board.claim_status(claim) is ClaimStatus.OWNED

    with counting_round_trips(owner_board, monkeypatch) as trips:
        operator.abandon(job, "operator", force=True, reason="stuck")
        wait_until(lambda: owner_board.claim_status(claim) is ClaimStatus.LOST, timeout=5)
    assert trips.count == 0


def test_cancel_reaches_the_owner_without_a_round_trip(redis_board_factory, monkeypatch):
    owner_board = redis_board_factory()
    producer = redis_board_factory()
    job = producer.post("j", "f")
    claim = owner_board.claim(job, unique_owner("owner"))

    with counting_round_trips(owner_board, monkeypatch) as trips:
        assert producer.cancel(job).cancel_requested
        wait_until(lambda: owner_board.cancel_requested(job), timeout=5)
        assert owner_board.claim_status(claim) is ClaimStatus.OWNED
    assert trips.count == 0


def test_a_claim_taken_by_another_is_seen_as_lost(redis_board_factory):
    slow = redis_board_factory(lease=0.3)
    fast = redis_board_factory(lease=5)
    job = fast.post("j", "f")
    claim = slow.claim(job, unique_owner("slow"))
    # The slow owner's lease runs out (board time) and another owner takes the job.
    taken = wait_until(lambda: fast.claim_next(unique_owner("fast")), timeout=5)
    assert taken.job_id == job.id
    wait_until(lambda: job.id in slow._lost, timeout=5)  # via the expired event
    assert slow.claim_status(claim) is ClaimStatus.LOST


def test_events_are_compact_json(redis_board_factory, raw):
    board = redis_board_factory()
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    # An observer takes every channel of the board (owners' ones included) with a pattern;
    # a board listening to every event makes the owner's own changes published too.
    redis_board_factory().add_listener(lambda event: None)
    pubsub.psubscribe(f"{prefix(board)}events*")
    try:
        wait_until(lambda: raw.pubsub_numpat() >= 1)
        wait_until(lambda: raw.hget(f"{prefix(board)}board", "observed_until") is not None)
        job = board.post("j", "flow-x")
        who = unique_owner("c")
        claim = board.claim(job, who)
        board.consume(claim, who, claim.token)
        seen = []
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                seen.append(json.loads(message["data"]))
    finally:
        pubsub.close()
    ends = seen[1]["data"].pop("ends")  # the lease end, for idle waiters
    assert float(ends) == pytest.approx(claim.expires_at, abs=1e-3)
    assert seen == [
        {"kind": "posted", "job": job.id, "data": {"flow": "flow-x", "name": "j"}},
        {"kind": "claimed", "job": job.id, "data": {"token": 1, "owner": who, "flow": "flow-x"}},
        {
            "kind": "consumed",
            "job": job.id,
            "data": {"token": 1, "owner": who, "forced": False, "flow": "flow-x"},
        },
    ]


# -- key layout, retention and bad data ---------------------------------------


def test_purge_of_everything_leaves_no_keys_behind(redis_board_factory, raw):
    board = redis_board_factory()
    who = unique_owner("c")

    def claimed():
        job = board.post("j", "f")
        return job, board.claim(job, who)

    job, claim = claimed()
    board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
    board.consume(claim, who, claim.token, result=1)
    job, claim = claimed()
    board.fail(claim, who, claim.token, error="boom")
    job, claim = claimed()
    board.cancel(job)
    board.fail(claim, who, claim.token, error="cancelled", cancelled=True)
    board.cancel(board.post("w", "other-flow"))
    board.trash(board.post("t", "f"), "operator", force=True)
    poison = board.post("p", "f", max_attempts=1)
    board.abandon(poison, who, board.claim(poison, who).token)
    assert board.claim_next(who) is None  # trashes the poison job
    board.register_entity("c1", metadata={"pid": 1})
    board.unregister_entity("c1")

    assert board.purge() == 6

    keys = {k.decode() for k in raw.scan_iter(match=f"{prefix(board)}*")}
    assert keys == {f"{prefix(board)}{k}" for k in ("seq", "board", "runs")}
    assert list(board.iterjobs(states=list(JobState))) == []


def test_finished_jobs_expire_after_retention(redis_board_factory, raw):
    board = redis_board_factory(retention=60)
    job = board.post("j", "f")
    who = unique_owner("c")
    claim = board.claim(job, who)
    board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
    done = board.consume(claim, who, claim.token)
    keys = prefix(board)
    assert 0 < raw.pttl(f"{keys}job:{job.id}") <= 60_000
    assert raw.hget(f"{keys}job:{job.id}", "progress:t") is not None  # the job keeps its records
    assert not raw.exists(f"{keys}progress:{job.id}")
    assert raw.zscore(f"{keys}finished", job.id) == pytest.approx(done.finished_at + 60, abs=1)
    assert raw.zscore(f"{keys}leases", job.id) is None


def test_progress_kept_in_a_key_of_its_own_is_still_read_and_expires(redis_board_factory, raw):
    """A job posted before its progress records moved into its hash: the records its
    own key holds are read (with the later ones from the hash) and expire with the job."""
    board = redis_board_factory(retention=60)
    job = board.post("j", "f")
    keys = prefix(board)
    raw.hdel(f"{keys}job:{job.id}", "progress_in_job")  # as posted by the earlier layout
    raw.hset(f"{keys}progress:{job.id}", mapping={"a": '{"state": "SUCCESS"}', "b": '{"n": 1}'})
    who = unique_owner("c")
    claim = board.claim(job, who)
    board.save_progress(claim, who, claim.token, "b", {"n": 2})
    assert board.load_progress(job) == {"a": {"state": "SUCCESS"}, "b": {"n": 2}}
    board.consume(claim, who, claim.token)
    for key in (f"{keys}job:{job.id}", f"{keys}progress:{job.id}"):
        assert 0 < raw.pttl(key) <= 60_000
    assert board.load_progress(job) == {"a": {"state": "SUCCESS"}, "b": {"n": 2}}


def test_corrupt_job_data_gives_a_clear_invalid_job(redis_board_factory, raw):
    board = redis_board_factory()
    keys = prefix(board)
    bad, bad_store, good = board.post("bad", "f"), board.post("bad2", "f"), board.post("ok", "f")
    raw.hset(f"{keys}job:{bad.id}", "store", "{not json")

    with pytest.raises(InvalidJob) as info:
        board.get(bad)
    assert (info.value.job, info.value.field) == (bad.id, "store")
    assert bad.id in str(info.value) and "'store'" in str(info.value)
    listed = {job.id: job for job in board.iterjobs()}  # listed, marked unreadable
    assert "'store'" in listed[bad.id].details["unreadable"]

    # A job whose numbers are corrupt is trashed by claim_next, which goes on.
    raw.hset(f"{keys}job:{bad.id}", mapping={"store": "{}", "attempts": "many"})
    raw.hset(f"{keys}job:{bad_store.id}", "store", "[1, 2]")
    who = unique_owner("c")
    claim = board.claim_next(who)  # bad_store: claimed, unreadable, trashed; then good
    assert claim is not None and claim.job_id == good.id
    for job_id, field in ((bad.id, "attempts"), (bad_store.id, "store")):
        assert raw.hget(f"{keys}job:{job_id}", "state") == b"trashed"
        assert field in raw.hget(f"{keys}job:{job_id}", "last_error").decode()
    with pytest.raises(InvalidJob, match="attempts"):
        board.get(bad)

    raw.hset(f"{keys}job:{good.id}", "name", b"\xff\xfe")
    with pytest.raises(InvalidJob, match="UTF-8"):
        board.get(good)
    raw.hset(f"{keys}progress:{good.id}", "t", "[oops")  # a record of the earlier layout
    with pytest.raises(InvalidJob, match="'t'"):
        board.load_progress(good)
    raw.delete(f"{keys}progress:{good.id}")
    raw.hset(f"{keys}job:{good.id}", "progress:u", "[oops")
    with pytest.raises(InvalidJob, match="'u'"):
        board.load_progress(good)


def test_claims_skip_the_reaper_until_a_lease_can_end_and_never_miss_one(private_board):
    """A claim reaps and promotes only once the first lease end or due time kept in
    the board's marker has come; a shorter lease or an earlier due time lowers it."""
    board, server = private_board(lease=60)
    admin = redis.Redis(port=server.port)
    first = board.claim(board.post("long", "f"), unique_owner("a"))  # first lease ends in 60 s
    board.post("later", "f", delay=60)  # first due time in 60 s
    board.post("filler", "f")
    assert board.claim_next(unique_owner("b")) is not None  # sets both bounds
    before = admin.info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
    board.post("next", "f")
    assert board.claim_next(unique_owner("b")) is not None
    after = admin.info("commandstats").get("cmdstat_zrangebyscore", {}).get("calls", 0)
    assert after == before  # nothing could be due: neither step ran

    # A lease renewed shorter and a job due sooner are still found on time.
    board.renew([first], lease=0.2)
    board.post("soon", "f", delay=0.3)
    who = unique_owner("c")
    taken = set()

    def both_taken() -> bool:
        claim = board.claim_next(who, lease=60)
        if claim is not None:
            taken.add(claim.job.name)
        return taken == {"long", "soon"}

    wait_until(both_taken, timeout=10)
    admin.close()


def test_a_lease_index_behind_its_job_is_fixed_not_reaped(private_board):
    board, server = private_board(lease=60)
    admin = redis.Redis(port=server.port)
    who = unique_owner("a")
    claim = board.claim(board.post("j", "f"), who)
    p = prefix(board)
    admin.zadd(f"{p}leases", {claim.job_id: 1.0})  # the index says the lease ended long ago
    admin.hdel(f"{p}board", "reap_at")  # and the marker does not say otherwise

    assert board.claim_next(unique_owner("b")) is None  # the reaper step meets it
    assert board.get(claim.job_id).owner == who  # still claimed: its lease runs
    assert admin.zscore(f"{p}leases", claim.job_id) == pytest.approx(claim.expires_at, abs=1)
    assert float(admin.hget(f"{p}board", "reap_at")) == pytest.approx(claim.expires_at, abs=1)
    admin.close()


def test_a_lease_ended_by_a_progress_write_is_counted(private_board):
    """save_progress of the board's own client does not read the marker: the lapse it
    finds is still counted, and the board's gen still moves."""
    board, _ = private_board()
    who = unique_owner("a")
    claim = board.claim(board.post("j", "f"), who, lease=0.2)
    gen = board._gen
    wait_until(lambda: board.get(claim.job_id).state is JobState.WAITING, timeout=5)
    with pytest.raises(NotOwner):
        board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
    assert board.counters()["expired"] == 1
    assert board.counters()["claimed"] == board.counters()["posted"] == 1
    board.claim_next(unique_owner("b"))  # a reply that carries the gen
    assert board._gen == gen + 2  # the lapse, then the new claim
