"""A Redis server that loses data never makes the board reissue tokens or rerun
finished jobs silently (issue 9 item 3): the board refuses to work, loudly,
until an operator resets it in a new epoch; persistence and eviction settings
are checked at connect."""

from __future__ import annotations

import logging
import time

import pytest
import redis

import jobboard
from conductor.conductor import Conductor
from jobboard import (
    BoardRegressed,
    BoardUnavailable,
    ClaimStatus,
    JobState,
    NotOwner,
    StaleToken,
    unique_owner,
)
from jobboard.admin.listings import stats_view
from jobboard.admin.render import render_stats
from jobboard.redis import RedisBoard
from tests.helpers import wait_until
from tests.jobboard.redis.helpers import acl_user_url, namespace
from tests.servers import RedisServer

pytestmark = pytest.mark.redis


def test_snapshot_restart_that_lost_writes_is_refused_loudly(
    redis_server_factory, open_board, caplog, monkeypatch
):
    monkeypatch.setattr(RedisBoard, "LISTEN_BACKOFF", 3.0)  # event links come back late
    server = redis_server_factory(save=RedisServer.DEFAULT_SAVE)  # redis-server's default
    ns = namespace()
    owner, worker = open_board(server, namespace=ns, lease=60), open_board(server, namespace=ns)
    bystander = open_board(server, namespace=ns)  # saw nothing that gets lost
    first, second = owner.post("first", "f"), owner.post("second", "f")
    redis.Redis(port=server.port).save()  # the snapshot the restart will come back with
    who, rival = unique_owner("owner"), unique_owner("worker")
    stale = owner.claim(first, who)
    owner.save_progress(stale, who, stale.token, "t1", {"state": "SUCCESS"})
    done = worker.claim(second, rival)
    worker.consume(done, rival, done.token, result="done once")

    server.restart(hard=True)  # kill -9: writes since the snapshot are gone

    # A client that saw none of the lost writes gets no claim while the board
    # settles: every running client checks in first (here, when its link is back).
    assert bystander.claim_next(unique_owner("bystander")) is None
    wait_until(lambda: not worker.connected, timeout=15)
    # The stale owner cannot write with its token...
    with pytest.raises(BoardRegressed, match="went back"):
        owner.save_progress(stale, who, stale.token, "t2", {"state": "SUCCESS"})
    assert owner.claim_status(stale) is ClaimStatus.LOST
    # ...and the job consumed before the crash does not run again: nobody gets a claim.
    with pytest.raises(BoardRegressed):
        worker.claim_next(rival)
    newcomer = open_board(server, namespace=ns)  # a new process is refused too
    with pytest.raises(BoardRegressed, match="refuses to work"):
        newcomer.claim_next(unique_owner("new"))
    assert not any(b.connected for b in (owner, worker, newcomer))  # health checks are red
    assert len(list(newcomer.iterjobs())) == 2  # reads work: an operator can look
    assert "went back" in owner.stats()["server"]["halted"]
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
    conductor = Conductor("c", owner, {"f": lambda job: None})
    conductor.last_heartbeat = time.monotonic()
    assert conductor.healthy() == (False, f"board refuses to work: {owner.halted}")

    # An operator who checked what was lost resets the board: a new epoch, whose
    # tokens beat every token issued before, and every older claim is void.
    epoch = newcomer.reset_after_data_loss()
    assert epoch == 1
    fresh = worker.claim(first, rival)
    assert fresh.token > stale.token and fresh.token > 1 << 32
    with pytest.raises(StaleToken):
        owner.save_progress(stale, who, stale.token, "t2", {"state": "SUCCESS"})
    wait_until(lambda: all(b.connected for b in (owner, worker, bystander)), timeout=10)


def test_restart_without_persistence_is_refused_even_by_an_idle_client(
    redis_server_factory, open_board
):
    server = redis_server_factory()  # no AOF, no snapshots
    ns = namespace()
    idle, worker = open_board(server, namespace=ns), open_board(server, namespace=ns)
    job = worker.post("j", "f")
    assert worker.claim_next(unique_owner("w")).job_id == job.id

    server.restart(hard=True)  # every job is gone

    # The idle board finds out when its event link reconnects: health goes red.
    wait_until(lambda: not idle.connected, timeout=15)
    assert "gone" in (idle.halted or "")
    with pytest.raises(BoardRegressed, match="gone"):
        worker.claim_next(unique_owner("w"))
    with pytest.raises(BoardRegressed):
        worker.post("j2", "f")
    newcomer = open_board(server, namespace=ns)
    assert not newcomer.connected
    with pytest.raises(BoardRegressed):
        newcomer.post("j3", "f")


def test_restart_of_an_aof_always_server_is_no_loss(redis_server_factory, open_board):
    server = redis_server_factory(persistent=True, save=RedisServer.DEFAULT_SAVE)
    board = open_board(server, lease=60, persistence="require")
    job = board.post("j", "f")
    who = unique_owner("c")
    claim = board.claim(job, who)
    server.restart(hard=True)
    board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
    board.consume(claim, who, claim.token)
    assert board.connected and board.halted is None
    assert board.stats()["server"]["persistence"] == "aof-always"


def test_unsafe_persistence_and_eviction_warn_or_refuse_at_connect(
    redis_server_factory, open_board, caplog
):
    server = redis_server_factory(config={"maxmemory": "3mb", "maxmemory-policy": "allkeys-lru"})
    with caplog.at_level(logging.WARNING, logger="jobboard.redis"):
        board = open_board(server)
    text = caplog.text
    assert "maxmemory-policy is allkeys-lru" in text and "noeviction" in text
    assert "persistence is none" in text
    info = board.stats()["server"]
    assert (info["eviction"], info["persistence"]) == ("allkeys-lru", "none")
    assert len(info["warnings"]) == 2 and "everything" in info["loss_window"]
    page = render_stats(stats_view(board), 200)  # what `jobboard stats` prints
    assert "allkeys-lru" in page and "persistence" in page
    conductor = Conductor("c", board, {"f": lambda job: None})
    conductor.last_heartbeat = time.monotonic()
    ok, reason = conductor.healthy()  # what /healthz answers
    assert ok and "allkeys-lru" in reason

    with pytest.raises(BoardUnavailable, match="eviction=require"):
        jobboard.connect(server.url, namespace=namespace(), eviction="require")
    with pytest.raises(BoardUnavailable, match="persistence=require"):
        jobboard.connect(server.url + "?persistence=require&eviction=ignore")
    caplog.clear()
    quiet = open_board(server.url + "?persistence=ignore&eviction=ignore")
    assert quiet.stats()["server"]["warnings"] == [] and "allkeys-lru" not in caplog.text
    with pytest.raises(jobboard.BadURL, match="persistence"):
        jobboard.connect(server.url + "?persistence=maybe")


def test_settings_hidden_by_acls_warn_or_refuse(redis_server_factory, open_board, caplog):
    server = redis_server_factory(persistent=True, password="admin-pw")
    url = acl_user_url(server)
    board = open_board(url)
    assert board.stats()["server"]["persistence"] == "unknown"
    assert "could not be read" in caplog.text
    with pytest.raises(BoardUnavailable, match="persistence=require"):
        jobboard.connect(url + "?persistence=require", namespace=namespace())


@pytest.mark.parametrize("given", [False, True], ids=["own-client", "given-client"])
def test_a_snapshot_restart_is_caught_with_or_without_the_connection_check(
    redis_server_factory, open_board, given
):
    """The board's own client checks the server's run id once per connection; a
    client given by the application cannot be hooked, so its scripts ask INFO:
    both catch a restart whose marker came back from a snapshot unchanged."""
    server = redis_server_factory(save=RedisServer.DEFAULT_SAVE)
    options = {"client": redis.Redis(port=server.port)} if given else {}
    board = open_board(server, lease=60, **options)
    assert board._check_run == ("1" if given else "0")
    job = board.post("j", "f")
    redis.Redis(port=server.port).save()  # the marker in the snapshot names this run
    who = unique_owner("c")
    claim = board.claim(job, who)  # lost by the restart
    server.restart(hard=True)
    with pytest.raises(BoardRegressed, match="went back"):
        board.save_progress(claim, who, claim.token, "t", {"state": "SUCCESS"})
    assert board.halted is not None


def test_a_reset_ends_every_claim_so_progress_under_an_older_one_is_refused(
    redis_server_factory, open_board
):
    """save_progress of the board's own client does not read the marker: an
    operator's reset (or a halt) ends every claim, and the job's fence refuses."""
    server = redis_server_factory()
    ns = namespace()
    owner, operator = open_board(server, namespace=ns, lease=60), open_board(server, namespace=ns)
    who = unique_owner("owner")
    claim = owner.claim(owner.post("j", "f"), who)
    owner.save_progress(claim, who, claim.token, "t1", {"state": "SUCCESS"})

    assert operator.reset_after_data_loss() == 1

    with pytest.raises(NotOwner):  # the owner had not heard of the reset yet
        owner.save_progress(claim, who, claim.token, "t2", {"state": "SUCCESS"})
    assert set(operator.load_progress(claim.job_id)) == {"t1"}
    job = operator.get(claim.job_id)
    assert job.state is JobState.WAITING and "voided" in (job.last_error or "")
    fresh = operator.claim(claim.job_id, unique_owner("next"))
    assert fresh.token > 1 << 32 > claim.token
