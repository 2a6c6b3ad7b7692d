"""The board contract, run against every backend (each test on its own namespace)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from jobboard import (
    BoardError,
    ClaimStatus,
    InvalidJob,
    InvalidState,
    JobNotFound,
    JobPriority,
    JobState,
    NotOwner,
    StaleToken,
    UnclaimableJob,
    unique_owner,
)
from tests.helpers import wait_until


def test_post_get_iterjobs_round_trip(board):
    job = board.post("resize", "images", {"path": "/a.png", "sizes": [1, 2]}, details={"by": "t"})
    got = board.get(job.id)
    assert got.id == job.id
    assert (got.name, got.flow) == ("resize", "images")
    assert got.store == {"path": "/a.png", "sizes": [1, 2]}
    assert got.details == {"by": "t"}
    assert got.state is JobState.WAITING
    assert got.priority is JobPriority.NORMAL
    assert got.owner is None and got.attempts == 0 and got.token == 0
    assert got.created_at > 0 and got.max_attempts >= 1
    assert [j.id for j in board.iterjobs()] == [job.id]
    assert [j.id for j in board.iterjobs(only_unclaimed=True, ensure_fresh=True)] == [job.id]
    assert board.job_count == 1
    with pytest.raises(JobNotFound):
        board.get("no-such-job")



def test_an_unknown_id_is_echoed_capped(board):
    # An id of any length a caller sends comes back cut short in the error
    long_id = "x" * 5000
    for call in (board.get, board.load_progress):
        with pytest.raises(JobNotFound) as caught:
            call(long_id)
        assert len(str(caught.value)) < 300, call

def test_priority_then_fifo_order(board):
    low = board.post("low", "f", priority="low")
    n1 = board.post("n1", "f")
    high = board.post("high", "f", priority=JobPriority.VERY_HIGH)
    n2 = board.post("n2", "f", priority="NORMAL")
    expected = [high.id, n1.id, n2.id, low.id]
    assert [j.id for j in board.iterjobs(ensure_fresh=True)] == expected
    who = unique_owner("c")
    claimed = [board.claim_next(who).job_id for _ in range(4)]
    assert claimed == expected
    assert board.claim_next(who) is None


def test_claim_next_only_serves_requested_flows(board):
    a = board.post("a", "flow-a")
    b = board.post("b", "flow-b")
    who = unique_owner("c")
    assert board.claim_next(who, flows=["flow-x"]) is None
    assert board.claim_next(who, flows=["flow-b"]).job_id == b.id
    assert board.claim_next(who, flows=["flow-b"]) is None
    assert board.claim_next(who, flows=["flow-a", "flow-b"]).job_id == a.id


def test_claim_is_exclusive_under_racing_threads(board_factory):
    boards = [board_factory() for _ in range(4)]
    jobs = [boards[0].post(f"j{i}", "f") for i in range(12)]
    winners: Counter[str] = Counter()
    errors: list[Exception] = []
    start = threading.Barrier(8)
    lock = threading.Lock()

    def racer(n: int) -> None:
        board = boards[n % len(boards)]
        who = unique_owner(f"racer{n}")
        start.wait()
        for job in jobs:
            try:
                board.claim(job.id, who)
            except UnclaimableJob:
                continue
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)
                continue
            with lock:
                winners[job.id] += 1

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert winners == Counter({job.id: 1 for job in jobs})
    assert all(boards[0].get(j.id).state is JobState.CLAIMED for j in jobs)


def test_claim_next_is_exclusive_under_racing_threads(board_factory):
    boards = [board_factory() for _ in range(4)]
    for i in range(40):
        boards[0].post(f"j{i}", "f")
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def racer(n: int) -> None:
        board = boards[n % len(boards)]
        who = unique_owner(f"racer{n}")
        start.wait()
        while True:
            claim = board.claim_next(who)
            if claim is None:
                return
            with lock:
                got.append(claim.job_id)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 40
    assert len(set(got)) == 40


def test_claiming_a_claimed_job_is_refused(board):
    job = board.post("j", "f")
    first = board.claim(job, unique_owner("a"))
    with pytest.raises(UnclaimableJob):
        board.claim(job, unique_owner("b"))
    assert board.find_owner(job) == first.owner
    assert board.get(job).token == first.token


def test_wrong_owner_and_wrong_token_are_rejected_and_change_nothing(board):
    job = board.post("j", "f")
    owner = unique_owner("owner")
    claim = board.claim(job, owner)
    intruder = unique_owner("intruder")
    for call in (
        lambda: board.consume(job, intruder, claim.token),
        lambda: board.abandon(job, intruder, claim.token),
        lambda: board.trash(job, intruder, claim.token),
        lambda: board.fail(job, intruder, claim.token, error="x"),
        lambda: board.save_progress(job, intruder, claim.token, "t", {"state": "SUCCESS"}),
        lambda: board.consume(job, owner, claim.token + 1),
        lambda: board.consume(job, owner, None),
        lambda: board.abandon(job, owner),
    ):
        with pytest.raises(NotOwner):
            call()
    after = board.get(job)
    assert after.state is JobState.CLAIMED and after.owner == owner
    assert after.token == claim.token
    assert board.load_progress(job) == {}


def test_lease_expiry_makes_job_claimable_and_bumps_token(board_factory):
    board = board_factory(lease=0.4)
    other = board_factory(lease=0.4)
    job = board.post("j", "f")
    old = board.claim(job, unique_owner("old"))
    assert board.claim_status(old) is ClaimStatus.OWNED
    wait_until(lambda: board.claim_status(old) is ClaimStatus.LOST, timeout=5)
    new = wait_until(lambda: _try_claim(other, job.id, unique_owner("new")), timeout=5)
    assert new.token > old.token
    with pytest.raises(StaleToken):
        board.save_progress(job, old.owner, old.token, "t", {"state": "SUCCESS"})
    with pytest.raises(StaleToken):
        board.consume(job, old.owner, old.token, result=1)
    assert board.get(job).owner == new.owner
    assert board.load_progress(job) == {}


def _try_claim(board, job_id, who):
    try:
        return board.claim(job_id, who)
    except UnclaimableJob:
        return None


def test_expired_job_is_reported_waiting(board):
    job = board.post("j", "f")
    board.claim(job, unique_owner("a"), lease=0.3)
    wait_until(lambda: board.get(job).state is JobState.WAITING, timeout=5)
    assert board.find_owner(job) is None
    assert [j.id for j in board.iterjobs(only_unclaimed=True, ensure_fresh=True)] == [job.id]


def test_renew_keeps_the_claim_alive(board):
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"), lease=0.5)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        renewed = board.renew([claim], lease=0.5)
        assert renewed[job.id] is not None
        assert renewed[job.id].token == claim.token
        time.sleep(0.1)  # renewal cadence under test, not synchronisation
    assert board.claim_status(claim) is ClaimStatus.OWNED
    assert board.find_owner(job) == claim.owner
    board.consume(job, claim.owner, claim.token)


def test_renew_reports_lost_claims(board):
    a = board.post("a", "f")
    b = board.post("b", "f")
    who = unique_owner("c")
    ca, cb = board.claim(a, who), board.claim(b, who)
    board.abandon(b, "operator", force=True)
    result = board.renew([ca, cb])
    assert result[a.id] is not None and result[b.id] is None
    assert board.claim_status(cb) is ClaimStatus.LOST
    assert board.claim_status(ca) is ClaimStatus.OWNED


def test_stale_token_after_abandon_and_reclaim(board):
    job = board.post("j", "f")
    first = board.claim(job, unique_owner("a"))
    board.save_progress(job, first.owner, first.token, "t1", {"state": "SUCCESS", "result": 1})
    board.abandon(job, first.owner, first.token, reason="shutting down")
    second = board.claim(job, unique_owner("b"))
    assert second.token > first.token
    with pytest.raises(StaleToken):
        board.save_progress(job, first.owner, first.token, "t2", {"state": "SUCCESS"})
    with pytest.raises(StaleToken):
        board.consume(job, first.owner, first.token)
    with pytest.raises(StaleToken):
        board.trash(job, first.owner, first.token)
    # Progress made under the first claim is there for the second owner.
    assert board.load_progress(job) == {"t1": {"state": "SUCCESS", "result": 1}}
    board.consume(job, second.owner, second.token, result={"ok": True})
    # Once the job is finished, the stale owner is still told its token is stale.
    with pytest.raises(StaleToken):
        board.save_progress(job, first.owner, first.token, "t3", {"state": "SUCCESS"})
    with pytest.raises(StaleToken):
        board.consume(job, first.owner, first.token)
    done = board.get(job)
    assert done.state is JobState.COMPLETE and done.result == {"ok": True}
    assert done.attempts == 2


def test_progress_round_trip(board):
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    records = {
        "fetch": {"state": "SUCCESS", "result": {"rows": [1, 2, 3]}, "execution": {"host": "h"}},
        "parse": {"state": "FAILURE", "failure": {"message": "boom"}},
    }
    for name, record in records.items():
        board.save_progress(job, claim.owner, claim.token, name, record)
    board.save_progress(job, claim.owner, claim.token, "parse", {"state": "SUCCESS"})
    assert board.load_progress(job) == {"fetch": records["fetch"], "parse": {"state": "SUCCESS"}}


def test_consume_stores_the_last_progress_records_under_its_fence(board):
    # Given a job with one task's record saved, claimed again by a second owner
    job = board.post("j", "f")
    first = board.claim(job, unique_owner("a"))
    board.save_progress(job, first.owner, first.token, "a", {"state": "SUCCESS", "result": 1})
    board.abandon(job, first.owner, first.token)
    second = board.claim(job, unique_owner("b"))
    last = {"b": {"state": "SUCCESS", "result": 2}, "a": {"state": "SUCCESS", "result": 3}}
    # When the stale owner consumes with records, nothing changes
    with pytest.raises(NotOwner):
        board.consume(job, first.owner, first.token, progress={"b": {"state": "SUCCESS"}})
    assert board.load_progress(job) == {"a": {"state": "SUCCESS", "result": 1}}
    # Then the owner's consume stores its records (new and replaced) with the outcome
    done = board.consume(job, second.owner, second.token, result="ok", progress=last)
    assert done.state is JobState.COMPLETE and done.result == "ok"
    assert board.load_progress(job) == last


def test_consume_and_claim_next_claims_the_next_job_once_the_consume_went_through(board):
    # Given two waiting jobs of flow "f" and one of flow "g", the first claimed
    who = unique_owner("a")
    first = board.post("one", "f")
    second = board.post("two", "f")
    other = board.post("three", "g")
    claim = board.claim(first, who)
    # When its owner consumes it and claims the next job of "f" in one call
    out = board.consume_and_claim_next(
        first, who, claim.token, result={"n": 1}, progress={"t": {"state": "SUCCESS"}},
        flows=["f"], lease=30,
    )
    # Then the first job is complete with its result and last record stored ...
    assert out.job.state is JobState.COMPLETE and out.job.result == {"n": 1}
    assert board.get(first).state is JobState.COMPLETE
    assert board.load_progress(first) == {"t": {"state": "SUCCESS"}}
    assert out.claim_error is None
    # ... and the second is claimed as claim_next would: fresh token, owner, lease, held
    nxt = out.claim
    assert nxt is not None and nxt.job_id == second.id and nxt.owner == who
    assert nxt.token > 0 and nxt.lease == 30
    assert board.held_claim(second) is not None
    assert board.claim_status(nxt) is ClaimStatus.OWNED
    got = board.get(second)
    assert got.state is JobState.CLAIMED and got.owner == who and got.token == nxt.token
    assert board.get(other).state is JobState.WAITING
    # And with nothing of "f" left, the next consume claims nothing
    last = board.consume_and_claim_next(second, who, nxt.token, flows="f")
    assert last.job.state is JobState.COMPLETE and last.claim is None
    assert board.get(other).state is JobState.WAITING
    assert board.held_claim(second) is None


def test_consume_and_claim_next_refused_claims_nothing(board):
    # Given a job taken over by a second owner, and another job waiting
    job = board.post("j", "f")
    waiting = board.post("w", "f")
    first = board.claim(job, unique_owner("a"))
    board.abandon(job, first.owner, first.token)
    second = board.claim(job, unique_owner("b"))
    # When the stale owner consumes and claims next, it is refused ...
    with pytest.raises(NotOwner):
        board.consume_and_claim_next(
            job, first.owner, first.token, progress={"x": {"state": "SUCCESS"}}
        )
    # ... and nothing changed: no record stored, no claim made
    assert board.load_progress(job) == {}
    assert board.get(waiting).state is JobState.WAITING
    assert board.get(job).owner == second.owner
    assert board.held_claim(waiting) is None
    # While the owner's own call still consumes it and claims the waiting job
    out = board.consume_and_claim_next(job, second.owner, second.token, flows=None)
    assert out.job.state is JobState.COMPLETE
    assert out.claim is not None and out.claim.job_id == waiting.id



@pytest.mark.parametrize("lease", [-1, 0, float("nan"), 1e9])
def test_consume_and_claim_next_refuses_a_bad_lease_before_writing(board, lease):
    # Given an owned job
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    # When its owner asks for the next claim with a lease out of bounds
    with pytest.raises(InvalidJob) as caught:
        board.consume_and_claim_next(job, claim.owner, claim.token, lease=lease)
    # Then the error names the field, and the job is still the owner's, unfinished
    assert caught.value.field == "lease"
    assert board.get(job).state is JobState.CLAIMED
    assert board.get(job).owner == claim.owner

def test_consume_fail_trash_finish_the_job(board):
    who = unique_owner("a")
    outcomes = {}
    for name in ("c", "f", "t"):
        job = board.post(name, "f")
        claim = board.claim(job, who)
        if name == "c":
            board.consume(job, who, claim.token, result=[1, "two"])
        elif name == "f":
            board.fail(job, who, claim.token, error="task 'x' failed: boom")
        else:
            board.trash(job, who, claim.token, reason="bad input")
        outcomes[name] = board.get(job)
    assert outcomes["c"].state is JobState.COMPLETE and outcomes["c"].result == [1, "two"]
    assert outcomes["f"].state is JobState.FAILED and "boom" in outcomes["f"].last_error
    assert outcomes["t"].state is JobState.TRASHED and outcomes["t"].last_error == "bad input"
    assert all(o.owner is None and o.finished_at for o in outcomes.values())
    assert list(board.iterjobs()) == []
    finished = {j.name for j in board.iterjobs(states=["complete", "failed", "trashed"])}
    assert finished == {"c", "f", "t"}
    with pytest.raises(UnclaimableJob):
        board.claim(outcomes["c"].id, who)


def test_cancel_waiting_and_claimed_jobs(board_factory):
    board = board_factory()
    owner_board = board_factory()
    waiting = board.post("w", "f")
    cancelled = board.cancel(waiting)
    assert cancelled.state is JobState.CANCELLED
    assert board.get(waiting).state is JobState.CANCELLED
    assert board.claim_next(unique_owner("x")) is None

    running = board.post("r", "f")
    claim = owner_board.claim(running, unique_owner("owner"))
    flagged = board.cancel(running)
    assert flagged.state is JobState.CLAIMED and flagged.cancel_requested

    def owner_knows() -> bool:
        owner_board.renew([owner_board.held_claim(running)])
        return owner_board.cancel_requested(running)

    wait_until(owner_knows, timeout=5)
    owner_board.fail(running, claim.owner, claim.token, error="cancelled at task 'x'", cancelled=True)
    assert board.get(running).state is JobState.CANCELLED
    with pytest.raises(InvalidState):
        board.cancel(running)


def test_wait_wakes_promptly_after_post(board_factory):
    waiter = board_factory()
    poster = board_factory()
    assert waiter.wait(timeout=0.05) is False
    woke = threading.Event()
    elapsed: list[float] = []

    def waiting() -> None:
        t0 = time.monotonic()
        if waiter.wait(timeout=10):
            elapsed.append(time.monotonic() - t0)
            woke.set()

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.1)  # let the waiter block before posting (the behaviour under test)
    poster.post("j", "f")
    assert woke.wait(10), "wait() did not return after a post"
    thread.join(5)
    assert elapsed and elapsed[0] < 5


def test_wait_returns_at_once_when_jobs_are_waiting(board):
    board.post("j", "f")
    assert board.wait(timeout=5) is True
    assert board.wait(timeout=0.05, flows=["other"]) is False


BAD_POSTS = [
    ("name", lambda b: b.post("", "f")),
    ("name", lambda b: b.post(None, "f")),
    ("flow", lambda b: b.post("j", "")),
    ("flow", lambda b: b.post("j", "bad flow name!")),
    ("store", lambda b: b.post("j", "f", ["not", "a", "dict"])),
    ("store", lambda b: b.post("j", "f", {"x": {1, 2}})),
    ("store", lambda b: b.post("j", "f", {"x": float("nan")})),
    ("store", lambda b: b.post("j", "f", {1: "int key"})),
    ("store", lambda b: b.post("j", "f", {"blob": "x" * (2 << 20)})),
    ("store", lambda b: b.post("j", "f", {"obj": object()})),
    ("priority", lambda b: b.post("j", "f", priority="urgent")),
    ("priority", lambda b: b.post("j", "f", priority=3)),
    ("max_attempts", lambda b: b.post("j", "f", max_attempts=0)),
    ("max_attempts", lambda b: b.post("j", "f", max_attempts=True)),
    ("details", lambda b: b.post("j", "f", details="text")),
]


@pytest.mark.parametrize("field,call", BAD_POSTS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_POSTS)])
def test_bad_input_is_rejected_and_board_unchanged(board, field, call):
    keep = board.post("keep", "f", {"a": 1})
    with pytest.raises(InvalidJob) as info:
        call(board)
    assert info.value.field == field
    assert field in str(info.value)
    assert [j.id for j in board.iterjobs(ensure_fresh=True)] == [keep.id]
    assert board.get(keep).store == {"a": 1}


def test_bad_fenced_writes_are_rejected(board):
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    with pytest.raises(InvalidJob) as info:
        board.save_progress(job, claim.owner, claim.token, "t", {"x": object()})
    assert info.value.field == "record"
    with pytest.raises(InvalidJob) as info:
        board.save_progress(job, claim.owner, claim.token, "", {})
    assert info.value.field == "atom_name"
    with pytest.raises(InvalidJob) as info:
        board.consume(job, claim.owner, claim.token, result={"x": {1}})
    assert info.value.field == "result"
    assert board.get(job).state is JobState.CLAIMED
    assert board.load_progress(job) == {}


def test_poison_job_is_trashed_after_max_attempts(board):
    job = board.post("poison", "f", max_attempts=2)
    for n in range(2):
        claim = board.claim_next(unique_owner(f"c{n}"))
        assert claim is not None and claim.job_id == job.id
        board.abandon(job, claim.owner, claim.token, reason="crashed")
    assert board.claim_next(unique_owner("c3")) is None
    trashed = board.get(job)
    assert trashed.state is JobState.TRASHED
    assert "poison" in trashed.last_error
    assert board.counters().get("poison", 0) >= 1


def test_refunded_abandons_never_make_a_job_poison(board):
    job = board.post("restarts", "f", max_attempts=2)
    for n in range(4):
        claim = board.claim_next(unique_owner(f"c{n}"))
        assert claim is not None and claim.job_id == job.id
        released = board.abandon(job, claim.owner, claim.token, reason="shutdown", refund=True)
        assert released.attempts == 0
    assert board.get(job).state is JobState.WAITING
    assert board.get(job).attempts == 0
    assert board.get(job).token == 4


def test_operator_force_abandon_and_trash(board_factory):
    board = board_factory()
    operator = board_factory()
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("a"))
    released = operator.abandon(job, "operator", force=True, reason="stuck")
    assert released.state is JobState.WAITING and released.owner is None
    with pytest.raises(NotOwner):
        board.consume(job, claim.owner, claim.token)
    again = board.claim(job, unique_owner("b"))
    assert again.token > claim.token
    trashed = operator.trash(job, "operator", force=True, reason="bad data")
    assert trashed.state is JobState.TRASHED
    with pytest.raises(InvalidState):
        operator.trash(job, "operator", force=True)
    with pytest.raises(InvalidState):
        operator.abandon(board.post("w", "f"), "operator", force=True)


def test_purge_and_retention(board_factory):
    board = board_factory(retention=0.5)
    done = board.post("done", "f")
    claim = board.claim(done, unique_owner("a"))
    board.consume(done, claim.owner, claim.token)
    live = board.post("live", "f")
    assert board.purge(older_than=3600) == 0
    wait_until(lambda: _gone(board, done.id), timeout=10)
    assert board.get(live).state is JobState.WAITING

    keep = board_factory(retention=3600)
    other = keep.post("other", "f")
    c = keep.claim(other, unique_owner("a"))
    keep.fail(other, c.owner, c.token, error="x")
    assert keep.purge(states=["complete"]) == 0
    assert keep.purge(states=["failed"]) == 1
    assert _gone(keep, other.id)
    with pytest.raises(BoardError):
        keep.purge(states=["waiting"])


def _gone(board, job_id) -> bool:
    board.purge(older_than=3600)  # also gives lazy backends a chance to apply retention
    try:
        board.get(job_id)
    except JobNotFound:
        return True
    return False


def test_entities(board):
    board.register_entity("c1", metadata={"flows": ["f"], "pid": 1})
    board.register_entity("c2")
    board.register_entity("c1", metadata={"flows": ["f", "g"], "pid": 1})
    names = {e.name: e for e in board.iter_entities()}
    assert set(names) == {"c1", "c2"}
    assert names["c1"].metadata == {"flows": ["f", "g"], "pid": 1}
    assert names["c1"].last_seen > 0
    board.unregister_entity("c2")
    assert [e.name for e in board.iter_entities()] == ["c1"]
    assert board.iter_entities(kind="other") == []


def test_stats(board):
    board.post("a", "f1")
    board.post("b", "f2")
    c = board.claim_next(unique_owner("x"), flows=["f2"])
    board.consume(c.job_id, c.owner, c.token)
    stats = board.stats()
    assert stats["states"]["waiting"] == 1 and stats["states"]["complete"] == 1
    assert stats["flows"] == {"f1": {"waiting": 1}, "f2": {"complete": 1}}
    assert stats["oldest_waiting_age"] is not None and stats["oldest_waiting_age"] >= 0


def test_namespaces_isolate_boards(board_factory):
    a = board_factory()
    b = board_factory(namespace=a.namespace + "-other")
    a.post("j", "f")
    assert list(b.iterjobs(ensure_fresh=True)) == []
    assert b.claim_next(unique_owner("x")) is None
