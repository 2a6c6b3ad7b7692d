"""ZooKeeper board: the nodes behind dedupe keys and jobs posted for later."""

from __future__ import annotations

import json

from jobboard import JobState, unique_owner
from jobboard.zookeeper.nodes import due_of


def test_a_key_left_unnamed_by_a_dead_producer_is_repaired_from_the_transaction(
    zookeeper_board_factory,
):
    board = zookeeper_board_factory()
    board.KEY_SETTLE = 0.2
    # Given a producer that died between its transaction and naming the key's node
    static = {"name": "j", "flow": "f", "priority": "NORMAL", "max_attempts": 5,
              "created_at": 1.0, "key": "k1", "store": {"a": 1}, "details": {}}
    tx = board.client.transaction()
    tx.create(board._path("keys", "kk1"), b"")
    tx.create(board._path("jobs", "p2+f+"), json.dumps(static).encode(), sequence=True)
    orphan_id = tx.commit()[1].rpartition("/")[2]
    # When another producer posts with the same key
    job = board.post("j", "f", {"a": 2}, key="k1")
    # Then it gets the orphan's job, and the key's node now names it
    assert job.id == orphan_id and job.store == {"a": 1}
    assert board.client.get(board._path("keys", "kk1"))[0].decode() == orphan_id
    assert len(list(board.iterjobs(ensure_fresh=True))) == 1


def test_purge_deletes_the_key_node_with_its_job(zookeeper_board_factory):
    board = zookeeper_board_factory()
    job = board.post("j", "f", key="a key/with slashes")
    key_node = board._path("keys", "ka%20key%2Fwith%20slashes")
    assert board.client.get(key_node)[0].decode() == job.id
    claim = board.claim(job, unique_owner("w"))
    board.consume(job, claim.owner, claim.token)
    assert board.purge() == 1
    assert board.client.exists(key_node) is None
    assert board.post("j", "f", key="a key/with slashes").id != job.id


def test_a_job_posted_for_later_carries_its_due_time_in_its_id(zookeeper_board_factory):
    board = zookeeper_board_factory()
    job = board.post("later", "f", delay=3600, priority="high")
    assert job.id.startswith("p1+f+d") and job.state is JobState.SCHEDULED
    assert due_of(job.id) == job.not_before
    other = zookeeper_board_factory()
    assert other.get(job).state is JobState.SCHEDULED
    assert [j.id for j in other.iterjobs(states=["scheduled"])] == [job.id]
    assert other.claim_next(unique_owner("c")) is None
