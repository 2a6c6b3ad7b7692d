"""consume_and_claim_next on ZooKeeper: one transaction for the pair, and every way
it can be refused or lose its answer (real server)."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss

from jobboard import JobState, NotOwner, unique_owner
from jobboard.zookeeper import ZookeeperBoard
from tests.jobboard.zookeeper.conftest import node

pytestmark = pytest.mark.zookeeper


def spy_transactions(board: ZookeeperBoard, monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Record the operations of every transaction ``board`` sends."""
    sent: list[list[Any]] = []
    transact = board._transact

    def spy(ops: list[Any], after: Any = None) -> list[Any]:
        sent.append(list(ops))
        return transact(ops, after)

    monkeypatch.setattr(board, "_transact", spy)
    return sent


def touches(ops: list[Any], folder: str, job_id: str) -> bool:
    return any(op[1].endswith(f"/{folder}/{job_id}") for op in ops)


def test_the_pair_is_one_transaction_with_no_read(zookeeper_board_factory, raw, monkeypatch):
    # Given a board holding one job of two, both posted by itself (nothing to read)
    board = zookeeper_board_factory()
    who = unique_owner("w")
    first, second = board.post("one", "f"), board.post("two", "f")
    claim = board.claim(first, who)
    sent = spy_transactions(board, monkeypatch)
    reads: list[Any] = []
    gather = board._gather
    monkeypatch.setattr(board, "_gather", lambda calls: reads.append(calls) or gather(calls))

    # When its owner consumes it and claims the next one
    out = board.consume_and_claim_next(
        first, who, claim.token, result=1, progress={"t": {"s": 1}}, flows=["f"]
    )

    # Then one transaction did both, with no read
    assert len(sent) == 1 and reads == []
    assert touches(sent[0], "done", first.id) and touches(sent[0], "claims", second.id)
    assert out.claim is not None and out.claim.job_id == second.id and out.claim_error is None
    done = raw.exists(node(board, "done", first.id))
    claimed = raw.exists(node(board, "claims", second.id))
    assert done.czxid == claimed.czxid  # committed together
    assert board.get(first).state is JobState.COMPLETE and board.get(first).result == 1
    assert board.load_progress(first) == {"t": {"s": 1}}
    got = board.get(second)
    assert got.state is JobState.CLAIMED and got.owner == who and got.token == out.claim.token
    counts = board.counters()
    assert counts.get("consumed") == 1 and counts.get("claimed") == 2
    # And the new claim is fenced as any other: its own consume goes through
    assert board.consume(second, who, out.claim.token).state is JobState.COMPLETE


def test_a_claim_race_falls_back_to_consume_then_claim_next(zookeeper_board_factory, monkeypatch):
    # Given a board holding a job, two others waiting, and a second board that
    # claims the job the first picks just before its transaction goes out
    board, rival = zookeeper_board_factory(), zookeeper_board_factory()
    who = unique_owner("w")
    first, second, third = (board.post(n, "f") for n in ("one", "two", "three"))
    claim = board.claim(first, who)
    taken: list[str] = []
    write = board._claim_write

    def raced(job_id: str, *args: Any) -> Any:
        if not taken:  # the pair's claim only
            taken.append(rival.claim(job_id, unique_owner("rival")).job_id)
        return write(job_id, *args)

    monkeypatch.setattr(board, "_claim_write", raced)
    sent = spy_transactions(board, monkeypatch)

    # When its owner consumes and claims next
    out = board.consume_and_claim_next(first, who, claim.token, result="r", flows=["f"])

    # Then the refused pair changed nothing; the plain consume went through once,
    # and claim_next took the job still waiting
    assert taken == [second.id]
    assert touches(sent[0], "done", first.id) and touches(sent[0], "claims", second.id)
    assert out.job.state is JobState.COMPLETE and out.job.result == "r"
    assert out.claim is not None and out.claim.job_id == third.id and out.claim_error is None
    assert board.get(first).state is JobState.COMPLETE
    assert board.counters().get("consumed") == 1
    assert board.get(second).owner != who and board.held_claim(second) is None
    assert board.get(third).owner == who


def test_a_stale_token_claims_nothing_even_when_the_view_is_late(
    zookeeper_board_factory, raw, monkeypatch
):
    # Given a board whose claim was taken over by another board, the loss not yet
    # seen by the first (its claim watch held back), and a job waiting
    board, rival = zookeeper_board_factory(), zookeeper_board_factory()
    who = unique_owner("w")
    job, waiting = board.post("j", "f"), board.post("w", "f")
    monkeypatch.setattr(board, "_verify_claim", lambda job_id: None)
    claim = board.claim(job, who)
    rival.abandon(job, "op", force=True)
    taken = rival.claim(job, unique_owner("rival"))
    sent = spy_transactions(board, monkeypatch)

    # When the stale owner consumes and claims next
    with pytest.raises(NotOwner):
        board.consume_and_claim_next(job, who, claim.token, result="x", flows=["f"])

    # Then it was refused and claimed nothing: the job is the rival's, the other waits
    assert touches(sent[0], "done", job.id) and touches(sent[0], "claims", waiting.id)
    assert all(not touches(ops, "claims", waiting.id) for ops in sent[1:])
    assert raw.exists(node(board, "claims", waiting.id)) is None
    assert board.get(waiting).state is JobState.WAITING and board.held_claim(waiting) is None
    assert board.get(job).owner == taken.owner and board.get(job).state is JobState.CLAIMED
    assert board.counters().get("consumed") is None


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_lost_answer_neither_consumes_twice_nor_loses_the_claim(
    zookeeper_board_factory, monkeypatch, applied
):
    # Given a board whose pair transaction loses its answer (after or instead of
    # being applied)
    board = zookeeper_board_factory()
    who = unique_owner("w")
    first, second = board.post("one", "f"), board.post("two", "f")
    claim = board.claim(first, who)
    transact = board._transact
    lost: list[bool] = []

    def lose(ops: list[Any], after: Any = None) -> list[Any]:
        if not lost and touches(ops, "done", first.id):
            lost.append(True)
            if applied:
                transact(ops, after)
            raise ConnectionLoss()
        return transact(ops, after)

    monkeypatch.setattr(board, "_transact", lose)

    # When its owner consumes and claims next
    out = board.consume_and_claim_next(first, who, claim.token, result=7, flows=["f"])

    # Then the job was consumed once and the next one is ours, held and fenced
    assert lost == [True]
    assert out.job.state is JobState.COMPLETE and out.job.result == 7
    assert board.counters().get("consumed") == 1
    assert out.claim is not None and out.claim.job_id == second.id
    assert board.held_claim(second) is not None
    assert board.get(second).owner == who and board.get(second).token == out.claim.token
    assert board.consume(second, who, out.claim.token).state is JobState.COMPLETE


def test_a_pair_over_the_request_limit_takes_the_two_steps(zookeeper_board_factory, monkeypatch):
    # Given a board whose pair would be over ZooKeeper's request limit while the
    # consume alone is not (the claim's few hundred bytes tip it over)
    board = zookeeper_board_factory()
    who = unique_owner("w")
    first, second = board.post("one", "f"), board.post("two", "f")
    claim = board.claim(first, who)
    sizes: list[int] = []
    transact = board._transact

    def measured(ops: list[Any], after: Any = None) -> list[Any]:
        size = sum(len(op[2]) for op in ops if op[0] in ("create", "set"))
        sizes.append(size)
        if touches(ops, "done", first.id) and touches(ops, "claims", second.id):
            monkeypatch.setattr(board, "REQUEST_LIMIT", size - 1)
        try:
            return transact(ops, after)
        finally:
            monkeypatch.setattr(board, "REQUEST_LIMIT", ZookeeperBoard.REQUEST_LIMIT)

    monkeypatch.setattr(board, "_transact", measured)

    # When its owner consumes and claims next
    out = board.consume_and_claim_next(first, who, claim.token, result="r", flows=["f"])

    # Then the pair was not sent; the consume and the claim went through one after
    # the other
    assert len(sizes) == 3
    assert out.job.state is JobState.COMPLETE and board.counters().get("consumed") == 1
    assert out.claim is not None and out.claim.job_id == second.id
    assert board.get(second).owner == who


@pytest.mark.parametrize("lease", [30.0, None], ids=["leased", "session-bound"])
def test_a_leased_pair_takes_the_board_out_of_the_queues(
    zookeeper_board_factory, monkeypatch, lease
):
    # Given a board first in the queue of idle boards for flow "g", holding a job
    # of flow "f" with another one waiting
    board = zookeeper_board_factory()
    who = unique_owner("w")
    assert board.wait(timeout=0.05, flows=["g"]) is False
    assert board._places and not board._queued_behind(frozenset({"g"}))
    first, second = board.post("one", "f"), board.post("two", "f")
    claim = board.claim(first, who)
    assert board._places  # busy, and no job of "g" waits: it keeps its place
    sent = spy_transactions(board, monkeypatch)

    # When it consumes and claims the next job of "f" in one transaction
    out = board.consume_and_claim_next(first, who, claim.token, flows=["f"], lease=lease)

    # Then a leased claim took it out of every queue; a session-bound one did not
    assert len(sent) == 1
    assert out.claim is not None and out.claim.job_id == second.id and out.claim.lease == lease
    assert bool(board._places) is (lease is None)
