"""SQLite board specifics: OS processes racing on one file, wake-up by polling, errors."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter, defaultdict

import pytest

import jobboard
from jobboard import BoardError, BoardUnavailable, JobState, unique_owner
from jobboard.sqlite import SqliteBoard
from jobboard.sqlite.schema import SQL_BEST_ANY, SQL_BEST_OF_FLOW, SQL_EXPIRED
from tests.fixtures import sqlite_url
from tests.helpers import wait_until
from tests.jobboard.sqlite_processes import BoardProcess

PROCESSES = 4
JOBS_PER_PROCESS = 200


def _start_racers(role: str, path, namespace: str, *args: str) -> list[BoardProcess]:
    """Start racing board processes and release them all at once when every one is ready."""
    procs = [BoardProcess(role, path, namespace, *args) for _ in range(PROCESSES)]
    try:
        for proc in procs:
            assert proc.read() == {"ready": True}
        for proc in procs:
            proc.send("go")
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


def test_processes_racing_on_one_file_never_share_a_job(sqlite_board_factory, sqlite_path):
    # Given 800 waiting jobs on one file
    board = sqlite_board_factory()
    posted = {board.post(f"j{i}", "f").id for i in range(PROCESSES * JOBS_PER_PROCESS)}
    # When 4 OS processes claim_next and consume as fast as they can
    procs = _start_racers("race", sqlite_path, board.namespace)
    claims = [(n, line) for n, proc in enumerate(procs) for line in proc.finish(timeout=90)]
    # Then every job was claimed exactly once, by one process, and consumed by it
    per_job = Counter(line["job"] for _, line in claims)
    assert set(per_job) == posted
    assert set(per_job.values()) == {1}
    assert all(line["token"] == 1 for _, line in claims)
    assert len({n for n, _ in claims}) >= 2, "the processes did not race"
    done = {j.id: j for j in board.iterjobs(states=["complete"])}
    assert set(done) == posted
    owners = {line["job"]: line["owner"] for _, line in claims}
    assert all(job.result == {"by": owners[job_id]} for job_id, job in done.items())
    counters = board.counters()
    assert counters["claimed"] == counters["consumed"] == len(posted)
    assert board.job_count == 0


def test_tokens_strictly_increase_per_job_under_leases_abandons_and_expiry(
    sqlite_board_factory, sqlite_path
):
    # Given jobs that may be claimed many times
    board = sqlite_board_factory()
    posted = {board.post(f"j{i}", "f", max_attempts=200).id for i in range(40)}
    # When 4 processes claim with 0.2 s leases and consume, abandon, or stall past the lease
    procs = _start_racers("churn", sqlite_path, board.namespace, "--lease", "0.2")
    lines = [line for proc in procs for line in proc.finish(timeout=100)]
    claims: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        if line["event"] == "claim":
            claims[line["job"]].append(line)
    # Then each job's claims carry tokens 1, 2, 3... in claim order, never one token twice
    assert set(claims) == posted
    for job_id, seen in claims.items():
        seen.sort(key=lambda c: c["token"])
        assert [c["token"] for c in seen] == list(range(1, len(seen) + 1)), job_id
        times = [c["at"] for c in seen]
        assert times == sorted(times), job_id
    # and exactly one write finished each job: the holder of its last token's
    consumed = Counter(line["job"] for line in lines if line["event"] == "consumed")
    assert consumed == Counter(posted)
    for job in board.iterjobs(states=["complete"]):
        assert job.token == len(claims[job.id])
        assert job.result == {"token": job.token}
        assert board.load_progress(job) == {"step": {"token": job.token}}
    # and writes after a lease ran out were refused (the expiry path was exercised)
    refused = [line for line in lines if line["event"] == "refused"]
    assert refused and all(
        line["error"] in ("NotOwner", "StaleToken", "InvalidState") for line in refused
    )
    assert any(line["event"] == "abandoned" for line in lines)
    assert board.counters()["expired"] >= 1
    assert board.job_count == 0


def _poll_bound(seconds: float) -> int:
    """Most polls the adaptive schedule allows in ``seconds`` (plus slack for one kick)."""
    sleep, total, polls = SqliteBoard.POLL_MIN, 0.0, 1
    while total < seconds:
        total += sleep
        polls += 1
        sleep = min(sleep * SqliteBoard.POLL_GROWTH, SqliteBoard.POLL_MAX)
    return polls + 3


def test_idle_wait_polls_on_the_adaptive_schedule(sqlite_board_factory):
    board = sqlite_board_factory()
    polls, cpu, wall = board.polls, time.process_time(), time.monotonic()
    assert board.wait(timeout=2.0) is False
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    made = board.polls - polls
    assert 2 <= made <= _poll_bound(wall), (made, wall)
    assert cpu < 0.2 * wall  # a sanity bound only: wall-clock thresholds are noisy


def test_wait_wakes_after_a_post_from_another_process(sqlite_board_factory, sqlite_path):
    board = sqlite_board_factory()
    waiter = BoardProcess("waiter", sqlite_path, board.namespace, "--flow", "f", "--seconds", "20")
    try:
        assert waiter.read() == {"ready": True}
        time.sleep(0.5)  # let the waiter's poll back off to its longest sleep (under test)
        board.post("other", "g")  # another flow: the waiter keeps waiting
        time.sleep(0.3)  # time for the waiter to look and go back to sleep (under test)
        posted_at = time.time()
        board.post("mine", "f")
        woke = waiter.read()
    finally:
        waiter.kill()
    assert woke["woke"] is True
    assert woke["at"] >= posted_at, "woken before the matching post"
    assert woke["at"] - posted_at < 1.0


def test_cancel_and_forced_abandon_reach_the_owner_process_without_renew(
    sqlite_board_factory, sqlite_path
):
    # Given a job claimed by another process with a long lease it never renews
    board = sqlite_board_factory()
    job = board.post("j", "f")
    owner = BoardProcess("owner", sqlite_path, board.namespace, "--lease", "60")
    try:
        claimed = owner.read()
        assert claimed["job"] == job.id
        time.sleep(0.3)  # let the owner's poll back off (the latency under test)
        # When an operator cancels, the owner's local cancel_requested() turns true
        cancelled_at = time.time()
        board.cancel(job)
        seen = owner.read()
        assert seen["event"] == "cancel_requested"
        assert seen["at"] - cancelled_at < 1.0
        # When the operator then force-abandons, the owner's claim_status() says LOST
        time.sleep(0.3)
        abandoned_at = time.time()
        board.abandon(job, "operator", force=True)
        seen = owner.read()
        assert seen["event"] == "lost"
        assert seen["at"] - abandoned_at < 1.0
    finally:
        owner.kill()
    assert board.get(job).state is JobState.WAITING


def test_schema_is_versioned_in_wal_mode_and_created_once(sqlite_board_factory, sqlite_path):
    first = sqlite_board_factory()
    first.post("j", "f")
    second = sqlite_board_factory()  # opening again changes nothing
    assert [j.name for j in second.iterjobs()] == ["j"]
    with sqlite3.connect(sqlite_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SqliteBoard.SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert {"jobs", "progress", "entities", "counters"} <= tables


@pytest.mark.parametrize(
    "sql,params,index",
    [
        (SQL_BEST_OF_FLOW, ("ns", "f"), "jobs_claim"),
        (SQL_BEST_ANY, ("ns",), "jobs_order"),
        (SQL_EXPIRED, ("ns", 0.0), "jobs_lease"),
    ],
)
def test_claim_queries_are_index_probes(sqlite_board_factory, sqlite_path, sql, params, index):
    board = sqlite_board_factory()
    for i in range(30):
        board.post(f"j{i}", f"flow{i % 3}", priority=["high", "normal", "low"][i % 3])
    raw = sqlite3.connect(sqlite_path)
    try:
        plan = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        raw.close()
    assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_a_write_locked_past_the_busy_timeout_is_board_unavailable(
    sqlite_board_factory, sqlite_path
):
    board = sqlite_board_factory(busy_timeout=0.2)
    job = board.post("j", "f")
    raw = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(BoardUnavailable, match=r"post failed.*locked"):
            board.post("k", "f")
        with pytest.raises(BoardUnavailable, match=r"claim_next failed"):
            board.claim_next(unique_owner("c"))
        assert board.get(job).state is JobState.WAITING  # WAL: readers are not blocked
        raw.execute("ROLLBACK")
    finally:
        raw.close()
    assert board.claim_next(unique_owner("c")).job_id == job.id


def test_reads_retry_transient_lock_errors_and_writes_do_not(sqlite_board_factory):
    board = sqlite_board_factory()
    calls: list[str] = []

    def flaky(conn, now):
        calls.append("read")
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert board._read("probe", flaky) == "ok"
    assert len(calls) == 3

    def locked(conn, now, events):
        calls.append("write")
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(BoardUnavailable, match="probe"):
        board._write("probe", locked)
    assert calls.count("write") == 1


def test_a_corrupt_file_is_a_clear_board_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is certainly not an SQLite database file\n" * 200)
    with pytest.raises(BoardError, match="not a usable board database") as info:
        jobboard.connect(sqlite_url(path))
    assert not isinstance(info.value, BoardUnavailable)


@pytest.mark.parametrize(
    "setup,message",
    [
        ("PRAGMA user_version = 99", "schema version 99"),
        ("CREATE TABLE jobs (x)", "not a job board database"),
    ],
    ids=["newer-schema", "foreign-jobs-table"],
)
def test_files_the_board_did_not_write_are_refused(tmp_path, setup, message):
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute(setup)
    raw.commit()
    raw.close()
    with pytest.raises(BoardError, match=message):
        jobboard.connect(sqlite_url(path))
    raw = sqlite3.connect(path)
    try:  # and left as it was
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        assert "progress" not in tables
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    finally:
        raw.close()


def test_an_unopenable_path_is_board_unavailable(tmp_path):
    with pytest.raises(BoardUnavailable, match="no-such-dir"):
        jobboard.connect(sqlite_url(tmp_path / "no-such-dir" / "board.db"))


def test_urls(tmp_path, monkeypatch):
    board = SqliteBoard.from_url("sqlite:///var/lib/conductor/board.db?namespace=x&lease=2")
    assert (board.path, board.namespace, board.lease) == ("/var/lib/conductor/board.db", "x", 2.0)
    monkeypatch.chdir(tmp_path)
    relative = SqliteBoard.from_url("sqlite://data.db?busy_timeout=0.5")
    assert (relative.path, relative.busy_timeout) == ("data.db", 0.5)
    assert SqliteBoard.from_url("sqlite:////srv/b.db").path == "/srv/b.db"
    assert SqliteBoard.from_url("sqlite:///:memory:").path == ":memory:"
    for bad in ("sqlite://", "sqlite:///x.db?colour=blue", "sqlite:///x.db?busy_timeout=soon"):
        with pytest.raises(jobboard.BadURL):
            SqliteBoard.from_url(bad)


def test_memory_database_serves_one_process():
    with jobboard.connect("sqlite:///:memory:") as board:
        other = jobboard.connect("sqlite:///:memory:")
        try:
            job = board.post("j", "f")
            assert list(other.iterjobs()) == []  # each ":memory:" board is its own database
            assert board.wait(timeout=1) is True
            claim = board.claim_next(unique_owner("c"))
            board.consume(job, claim.owner, claim.token, result=1)
            assert board.get(job).state is JobState.COMPLETE
        finally:
            other.close()


def test_claim_next_reclaims_an_expired_lease_and_counts_it(sqlite_board_factory):
    board = sqlite_board_factory()
    job = board.post("j", "f")
    old = board.claim_next(unique_owner("old"), lease=0.2)
    assert board.claim_next(unique_owner("new")) is None
    new = wait_until(lambda: board.claim_next(unique_owner("new")), timeout=5)
    assert new.job_id == job.id and new.token == old.token + 1
    assert board.counters()["expired"] == 1


def test_retention_is_applied_lazily_by_post(sqlite_board_factory):
    board = sqlite_board_factory(retention=0.2)
    board.RETENTION_INTERVAL = 0.0  # sweep on every post for this test
    job = board.post("j", "f")
    claim = board.claim(job, unique_owner("c"))
    board.save_progress(job, claim.owner, claim.token, "t", {"x": 1})
    done = board.consume(job, claim.owner, claim.token)
    board.post("k", "f")
    assert board.get(job).state is JobState.COMPLETE  # not old enough yet
    wait_until(lambda: time.time() > done.finished_at + 0.25, timeout=5)
    board.post("l", "f")
    with pytest.raises(jobboard.JobNotFound):
        board.get(job)
    with pytest.raises(jobboard.JobNotFound):
        board.load_progress(job)


def test_forced_abandon_reaches_another_board_of_the_process_without_renew(
    sqlite_board_factory,
):
    owner_board, operator = sqlite_board_factory(), sqlite_board_factory()
    events: list[jobboard.BoardEvent] = []
    owner_board.add_listener(events.append)
    job = operator.post("j", "f")
    claim = owner_board.claim(job, unique_owner("owner"), lease=60)
    operator.abandon(job, "operator", force=True)
    wait_until(lambda: owner_board.claim_status(claim) is jobboard.ClaimStatus.LOST, timeout=3)
    assert any(e.kind == "abandoned" and e.job_id == job.id for e in events)


def test_a_killed_owner_process_loses_its_claim_when_the_lease_runs_out(
    sqlite_board_factory, sqlite_path
):
    board = sqlite_board_factory()
    job = board.post("j", "f")
    owner = BoardProcess("owner", sqlite_path, board.namespace, "--lease", "2")
    claimed = owner.read()
    owner.kill()  # SIGKILL: no abandon, no clean close
    assert board.claim_next(unique_owner("early")) is None  # the lease still holds
    again = wait_until(lambda: board.claim_next(unique_owner("heir")), timeout=10)
    assert again.job_id == job.id and again.token == claimed["token"] + 1
    board.consume(job, again.owner, again.token)
    assert board.get(job).state is JobState.COMPLETE
