"""One corrupted record (written straight into ZooKeeper) never stops a conductor or
the admin tool: it is listed as unreadable, the first claimant trashes it with the
reason, and operators can trash and purge it."""

from __future__ import annotations

import json

import pytest

from jobboard import JobState, unique_owner
from jobboard.admin.cli import main as admin_main
from tests.fixtures import board_url
from tests.helpers import wait_until
from tests.jobboard.zookeeper.conftest import node

pytestmark = pytest.mark.zookeeper

GOOD = {"name": "bad", "flow": "f", "priority": "NORMAL", "max_attempts": 5, "created_at": 1.0}


def _store_not_json(board, raw, job_id):
    raw.set(node(board, "jobs", job_id), b'{"name":"bad","flow":"f","store":{not json')


def _priority_out_of_range(board, raw, job_id):
    record = {**GOOD, "priority": 17, "store": {}, "details": {}}
    raw.set(node(board, "jobs", job_id), json.dumps(record).encode())


def _state_not_json(board, raw, job_id):
    raw.create(node(board, "state", job_id), b"\x00\xffgarbage")


def _state_token_not_a_number(board, raw, job_id):
    raw.create(node(board, "state", job_id), b'{"token":"seven","attempts":1}')


CORRUPTIONS = [_store_not_json, _priority_out_of_range, _state_not_json, _state_token_not_a_number]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_conductor_trashes_a_corrupt_job_and_carries_on(zookeeper_board_factory, raw, corrupt):
    # Given a corrupted job ahead of a good one
    producer = zookeeper_board_factory()
    bad = producer.post("bad", "f", priority="HIGH")
    good = producer.post("good", "f")
    corrupt(producer, raw, bad.id)
    conductor = zookeeper_board_factory()
    wait_until(lambda: conductor.job_count == 2, timeout=5)

    # The admin views list it, marked unreadable, and keep the others
    listed = {j.id: j for j in conductor.iterjobs()}
    assert set(listed) == {bad.id, good.id}
    assert "unreadable" in listed[bad.id].details
    assert listed[good.id].name == "good"
    assert "unreadable" in conductor.get(bad.id).details

    # When a conductor asks for work, it trashes the corrupt job and gets the good one
    who = unique_owner("c")
    claim = conductor.claim_next(who)
    assert claim is not None and claim.job_id == good.id
    trashed = producer.get(bad.id)
    assert trashed.state is JobState.TRASHED
    assert "unreadable" in trashed.last_error
    assert raw.exists(node(producer, "claims", bad.id)) is None
    assert conductor.held_claim(bad.id) is None
    assert producer.counters().get("trashed") == 1
    # and the finished listing shows it too
    assert [j.id for j in producer.iterjobs(states=["trashed"])] == [bad.id]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_operators_can_trash_and_purge_a_corrupt_job(zookeeper_board_factory, raw, corrupt):
    board = zookeeper_board_factory()
    job = board.post("bad", "f")
    corrupt(board, raw, job.id)
    operator = zookeeper_board_factory()
    done = operator.trash(job.id, "operator", reason="corrupt", force=True)
    assert done.state is JobState.TRASHED
    for folder in ("jobs", "state", "claims"):
        assert raw.exists(node(board, folder, job.id)) is None
    assert operator.purge(older_than=0) == 1
    assert list(operator.iterjobs(states=list(JobState))) == []


def test_an_unreadable_finished_record_is_listed_and_purged(zookeeper_board_factory, raw):
    board = zookeeper_board_factory()
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    board.consume(claim, claim.owner, claim.token)
    raw.set(node(board, "done", job.id), json.dumps({"id": job.id, "state": "exploded"}).encode())
    other = board.post("k", "f")

    listed = {j.id: j for j in board.iterjobs(states=list(JobState))}
    assert set(listed) == {job.id, other.id}
    assert "unreadable" in listed[job.id].details
    assert "unreadable" in board.get(job).details
    url = board_url(zookeeper_board_factory.hosts) + f"&namespace={board.namespace}"
    assert admin_main(["--board", url, "list"]) == 0
    assert board.purge(older_than=0) == 1
    assert [j.id for j in board.iterjobs(states=list(JobState))] == [other.id]
