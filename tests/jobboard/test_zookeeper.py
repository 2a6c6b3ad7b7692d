"""ZooKeeper-specific board behaviour: session expiry, suspension, server kill and
restart, digest ACLs, the local view (no listing per call), round trips, events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

import jobboard
from jobboard import (
    BadURL,
    BoardError,
    BoardUnavailable,
    ClaimStatus,
    InvalidJob,
    JobState,
    NotOwner,
    StaleToken,
    UnclaimableJob,
    unique_owner,
)
from jobboard.zookeeper import ZookeeperBoard
from tests.fixtures import CHROOT, board_url, expire_session
from tests.helpers import wait_until

pytestmark = pytest.mark.zookeeper


@pytest.fixture
def private_boards(zookeeper_server_factory):
    """Open boards on a private server that the test may kill, pause and restart."""
    opened: list[jobboard.JobBoard] = []
    server = zookeeper_server_factory()

    def open_board(session_timeout: float = 4.0, **options: Any) -> jobboard.JobBoard:
        options.setdefault("namespace", "private")
        board = jobboard.connect(board_url(server.hosts, session_timeout), **options)
        opened.append(board)
        return board

    open_board.server = server  # type: ignore[attr-defined]
    yield open_board
    for board in opened:
        board.close()


class _Requests:
    """Count the requests a board's kazoo client sends from the calling thread."""

    def __init__(self, board: ZookeeperBoard, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        client = board.client
        original = client._call
        caller = threading.get_ident()

        def counting(request: Any, async_object: Any) -> Any:
            if threading.get_ident() == caller:
                self.counts[type(request).__name__] += 1
            return original(request, async_object)

        monkeypatch.setattr(client, "_call", counting)

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts


# -- sessions -----------------------------------------------------------------


def test_session_expiry_releases_every_claim_and_rejects_the_old_owner(zookeeper_board_factory):
    # Given an owner holding three claims with progress saved
    owner_board = zookeeper_board_factory()
    rival = zookeeper_board_factory()
    jobs = [owner_board.post(f"j{i}", "f") for i in range(4)]
    who = unique_owner("owner")
    claims = [owner_board.claim_next(who) for _ in range(3)]
    assert {c.job_id for c in claims} == {j.id for j in jobs[:3]}
    assert all(c.deadline == float("inf") for c in claims)
    owner_board.save_progress(claims[0], who, claims[0].token, "t", {"state": "SUCCESS"})

    # When its session expires
    expire_session(owner_board.client, zookeeper_board_factory.hosts)

    # Then every claim is lost locally (pushed: claim_status asks nobody)...
    assert all(owner_board.claim_status(c) is ClaimStatus.LOST for c in claims)
    # ...the jobs are claimable at once, with larger tokens...
    taken = {}
    rival_who = unique_owner("rival")
    for _ in range(4):
        claim = wait_until(lambda: rival.claim_next(rival_who), timeout=5)
        taken[claim.job_id] = claim
    for old in claims:
        assert taken[old.job_id].token > old.token
    # ...and the old owner's writes change nothing.
    with pytest.raises(StaleToken):
        owner_board.save_progress(claims[0], who, claims[0].token, "t2", {"state": "SUCCESS"})
    with pytest.raises(StaleToken):
        owner_board.consume(claims[1], who, claims[1].token, result=1)
    assert owner_board.load_progress(claims[0]) == {"t": {"state": "SUCCESS"}}
    assert rival.get(claims[1].job_id).owner == rival_who
    rival.consume(claims[1].job_id, rival_who, taken[claims[1].job_id].token)


def test_expired_owner_is_refused_before_anyone_reclaims(zookeeper_board_factory):
    board = zookeeper_board_factory()
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    expire_session(board.client, zookeeper_board_factory.hosts)
    with pytest.raises(NotOwner):
        board.consume(job, claim.owner, claim.token)
    # The board carries on with its new session.
    again = board.claim(job, claim.owner)
    assert again.token == claim.token + 1
    assert board.claim_status(again) is ClaimStatus.OWNED
    board.consume(job, again.owner, again.token)
    assert board.get(job).state is JobState.COMPLETE


def test_entities_are_ephemeral_and_come_back_with_a_new_session(zookeeper_board_factory, raw):
    board = zookeeper_board_factory()
    other = zookeeper_board_factory()
    board.register_entity("c1", metadata={"pid": 1})
    assert [e.name for e in other.iter_entities()] == ["c1"]
    path = f"{CHROOT}/{board.namespace}/entities/kconductor/nc1"
    old_session = board.client.client_id[0]
    assert raw.exists(path).ephemeralOwner == old_session
    expire_session(board.client, zookeeper_board_factory.hosts)
    # The node went with the old session; the board registers it again on the new one.
    wait_until(lambda: (raw.exists(path) or raw.exists("/")).ephemeralOwner not in (0, old_session))
    assert [e.metadata for e in other.iter_entities()] == [{"pid": 1}]
    board.close()
    wait_until(lambda: other.iter_entities() == [], timeout=10)


DEAD_OWNER = """
import sys, time, jobboard
board = jobboard.connect(sys.argv[1], namespace=sys.argv[2])
who = jobboard.unique_owner("doomed")
tokens = [board.claim_next(who).token for _ in range(int(sys.argv[3]))]
print("ready", tokens, flush=True)
time.sleep(600)
"""


def test_a_killed_owner_loses_its_claims_within_the_session_timeout(zookeeper_board_factory):
    # Given another process holding every claim (session timeout 2s)
    board = zookeeper_board_factory()
    for i in range(5):
        board.post(f"j{i}", "f")
    url = board_url(zookeeper_board_factory.hosts, session_timeout=2)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen(
        [sys.executable, "-c", DEAD_OWNER, url, board.namespace, "5"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().startswith("ready")
        wait_until(lambda: not list(board.iterjobs(only_unclaimed=True)), timeout=5)
        assert board.claim_next(unique_owner("early")) is None
        # When it is killed without a word
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        # Then a waiter wakes once the session has expired and claims them all
        assert board.wait(timeout=10)
        elapsed = time.monotonic() - killed
        who = unique_owner("next")
        taken = [wait_until(lambda: board.claim_next(who), timeout=2) for _ in range(5)]
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()
    assert elapsed < 2 + 1.5  # session timeout plus ZooKeeper's tick rounding
    assert all(c.token == 2 for c in taken)


def test_suspended_connection_is_uncertain_then_owned_again(private_boards):
    board = private_boards(session_timeout=3.0)
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    server = private_boards.server
    server.pause()
    try:
        wait_until(lambda: board.claim_status(claim) is not ClaimStatus.OWNED, timeout=10)
    finally:
        server.resume()
    assert board.claim_status(claim) is ClaimStatus.UNCERTAIN
    wait_until(lambda: board.claim_status(claim) is ClaimStatus.OWNED, timeout=10)
    assert board.renew([claim])[job.id] is not None
    board.consume(job, claim.owner, claim.token, result="ok")
    assert board.get(job).result == "ok"


def test_a_long_suspension_means_lost(private_boards):
    board = private_boards(session_timeout=3.0)
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    private_boards.server.pause()
    try:
        wait_until(lambda: board.claim_status(claim) is ClaimStatus.LOST, timeout=10)
    finally:
        private_boards.server.resume()
    assert board.renew([claim])[job.id] is None


def test_server_kill_and_restart_keep_jobs(private_boards):
    board = private_boards()
    jobs = [board.post(f"j{i}", "f", {"i": i}) for i in range(3)]
    claim = board.claim(jobs[0], unique_owner("a"))
    board.save_progress(claim, claim.owner, claim.token, "t", {"state": "SUCCESS"})
    private_boards.server.restart(hard=True)  # kill -9, same port and data directory
    listed = wait_until(lambda: _fresh_ids(board), timeout=15)
    assert listed == [j.id for j in jobs]
    assert [board.get(j).store for j in jobs] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert board.load_progress(jobs[0]) == {"t": {"state": "SUCCESS"}}
    who = unique_owner("b")
    next_claim = board.claim_next(who)
    assert next_claim is not None
    board.consume(next_claim, who, next_claim.token)
    assert board.get(next_claim.job_id).state is JobState.COMPLETE


def test_a_dead_server_means_unavailable_not_a_hang(private_boards):
    board = private_boards(session_timeout=2.0)
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    private_boards.server.kill()
    started = time.monotonic()
    with pytest.raises(BoardUnavailable):
        board.post("k", "f")
    assert time.monotonic() - started < 2.0 + 1.0
    wait_until(lambda: board.claim_status(claim) is ClaimStatus.LOST, timeout=5)


def _fresh_ids(board: jobboard.JobBoard) -> list[str] | None:
    try:
        return [j.id for j in board.iterjobs(ensure_fresh=True)]
    except BoardError:
        return None


# -- ACLs ---------------------------------------------------------------------


def test_digest_acl_keeps_other_clients_out(zookeeper_board_factory, raw):
    board = zookeeper_board_factory(digest="alice:secret")
    job = board.post("j", "f", {"x": 1})
    path = f"{CHROOT}/{board.namespace}/jobs/{job.id}"
    data, _ = raw.get(path)  # readable by anyone
    assert b'"x":1' in data
    with pytest.raises(NoAuthError):
        raw.delete(path)
    with pytest.raises(NoAuthError):
        raw.set(path, b"{}")
    with pytest.raises(NoAuthError):
        raw.create(f"{CHROOT}/{board.namespace}/jobs/p2+f+9999999999", b"{}")
    with pytest.raises(BoardError):
        zookeeper_board_factory(digest="mallory:guess")
    partner = zookeeper_board_factory(digest="alice:secret")
    claim = partner.claim_next(unique_owner("p"))
    assert claim.job_id == job.id
    partner.consume(claim, claim.owner, claim.token)
    assert board.get(job).state is JobState.COMPLETE


# -- the local view and round trips -------------------------------------------


def test_iterjobs_and_claim_next_use_the_local_view(zookeeper_board_factory, monkeypatch):
    producer = zookeeper_board_factory()
    board = zookeeper_board_factory()
    for i in range(5):
        producer.post(f"j{i}", "f")
    wait_until(lambda: board.job_count == 5, timeout=5)
    requests = _Requests(board, monkeypatch)

    assert len(list(board.iterjobs())) == 5
    first = requests.take()
    assert not first["GetChildren"] and not first["GetChildren2"]
    assert len(list(board.iterjobs())) == 5
    assert requests.take() == Counter()  # everything cached: no request at all

    who = unique_owner("c")
    claim = board.claim_next(who)
    sent = requests.take()
    assert sent["Transaction"] == 1 and not sent["GetChildren2"] and not sent["GetChildren"]
    assert sum(sent.values()) <= 3  # the transaction and reads pipelined with it
    assert claim.job is not None and claim.job.name == "j0"

    assert board.find_owner(claim) == who
    assert board.claim_status(claim) is ClaimStatus.OWNED
    assert board.renew([claim])[claim.job_id] is not None
    assert requests.take() == Counter()

    board.save_progress(claim, who, claim.token, "a", {"state": "SUCCESS"})
    assert requests.take() == Counter({"Transaction": 1})
    board.consume(claim, who, claim.token, result=1)
    sent = requests.take()
    assert sent["Transaction"] == 1
    assert set(sent) <= {"Transaction", "SetData"}  # counters are written behind, unawaited

    assert len(list(board.iterjobs(ensure_fresh=True))) == 4
    assert requests.take()["GetChildren2"] >= 1


def test_own_claim_loss_is_pushed(zookeeper_board_factory, monkeypatch):
    board = zookeeper_board_factory()
    operator = zookeeper_board_factory()
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    operator.abandon(job, "operator", force=True)
    requests = _Requests(board, monkeypatch)
    wait_until(lambda: board.claim_status(claim) is ClaimStatus.LOST, timeout=5)
    assert requests.take() == Counter()


def test_cancel_reaches_the_owner_by_watch(zookeeper_board_factory):
    board = zookeeper_board_factory()
    other = zookeeper_board_factory()
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    other.cancel(job)
    wait_until(lambda: board.cancel_requested(job), timeout=5)
    board.fail(job, claim.owner, claim.token, error="cancelled", cancelled=True)
    assert other.get(job).state is JobState.CANCELLED


def test_listeners_hear_changes_made_elsewhere(zookeeper_board_factory):
    # Watches report states, not every step: changes faster than a watch round
    # trip may merge, so each step waits until the watcher has seen it.
    board = zookeeper_board_factory()
    watcher = zookeeper_board_factory()
    heard: list[jobboard.BoardEvent] = []
    watcher.add_listener(heard.append)

    def kinds() -> set[str]:
        return {e.kind for e in heard if e.job_id == job.id}

    job = board.post("j", "f")
    wait_until(lambda: "posted" in kinds(), timeout=5)
    claim = board.claim(job, unique_owner("a"))
    wait_until(lambda: "claimed" in kinds(), timeout=5)
    board.cancel(job)
    wait_until(lambda: "cancel_requested" in kinds(), timeout=5)
    board.consume(job, claim.owner, claim.token)
    wait_until(lambda: "consumed" in kinds(), timeout=5)
    claimed = next(e for e in heard if e.kind == "claimed")
    assert claimed.data == {"token": claim.token, "owner": claim.owner}
    assert watcher.cancel_requested(job) is True  # any board learns of cancels


def test_claim_racing_boards_after_abandon_uses_fresh_state(zookeeper_board_factory):
    a, b = zookeeper_board_factory(), zookeeper_board_factory()
    job = a.post("j", "f", max_attempts=3)
    first = a.claim(job, unique_owner("a"))
    a.abandon(job, first.owner, first.token)
    second = b.claim(job, unique_owner("b"))  # b's cache knew nothing: it reads and retries
    assert second.token == first.token + 1
    b.abandon(job, second.owner, second.token)
    third = a.claim(job, unique_owner("a2"))  # a's cached state is stale now
    assert third.token == second.token + 1 and third.job.attempts == 3
    a.abandon(job, third.owner, third.token)
    with pytest.raises(UnclaimableJob):
        b.claim(job, unique_owner("b2"))
    assert a.get(job).state is JobState.TRASHED


# -- limits, URLs, clients ------------------------------------------------------


def test_payloads_stay_under_zookeepers_node_limit(zookeeper_board_factory):
    board = zookeeper_board_factory()
    assert board.max_payload < 900 * 1024
    big = "x" * board.max_payload
    with pytest.raises(InvalidJob) as info:
        board.post(
            "j", "f", {"a": big[: board.max_payload // 2], "b": big[: board.max_payload // 2]}
        )
    assert info.value.field == "store"
    with pytest.raises(InvalidJob) as info:
        board.post("j", "f", {"a": 1}, details={"d": big})
    assert info.value.field == "details"
    job = board.post("j", "f", {"blob": big[: board.max_payload - 200]})
    claim = board.claim(job, unique_owner("a"))
    with pytest.raises(InvalidJob) as info:
        board.save_progress(job, claim.owner, claim.token, "t", {"r": big})
    assert info.value.field == "record"
    board.consume(job, claim.owner, claim.token, result={"r": big[: board.max_payload - 100]})
    assert len(board.get(job).result["r"]) == board.max_payload - 100


def test_url_options():
    board = ZookeeperBoard.from_url(
        "zookeeper://bob:pw@127.0.0.1:1,127.0.0.1:2/apps/x?namespace=prod&session_timeout=2.5&lease=7"
    )
    assert board.hosts == "127.0.0.1:1,127.0.0.1:2"
    assert board.root == "/apps/x/prod"
    assert board.session_timeout == 2.5 and board.lease == 7.0
    assert ZookeeperBoard.from_url("zookeeper://h:1").root == "/jobboard/default"
    for bad in (
        "zookeeper:///x",
        "zookeeper://h:1/x?session_timeout=soon",
        "zookeeper://h:1/x?namespace=a/b",
        "zookeeper://h:1/x?digest=nopassword",
    ):
        with pytest.raises(BadURL):
            ZookeeperBoard.from_url(bad)


def test_a_given_client_is_never_stopped(zookeeper_hosts):
    client = KazooClient(hosts=zookeeper_hosts, timeout=4)
    client.start(timeout=10)
    try:
        board = ZookeeperBoard(client=client, chroot=CHROOT, namespace="given").connect()
        job = board.post("j", "f")
        assert board.get(job).name == "j"
        board.close()
        assert client.connected
        client.delete(f"{CHROOT}/given", recursive=True)
    finally:
        client.stop()
        client.close()
