"""Once a claim is known lost no task of its job starts; an uncertain claim is trusted only so long.

The first test is the regression of a stale owner that noticed the loss at a
task's RUNNING transition, suspended the engine, and still ran that task.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from conductor import engines, states
from conductor.listeners.claims import CheckingClaimListener
from conductor.patterns import linear_flow
from conductor.task import Task
from jobboard import ClaimStatus
from jobboard.memory import MemoryBoard
from tests.helpers import wait_until


class Step(Task):
    """Appends its name to ``ran`` when it executes."""

    def __init__(self, name: str, ran: list[str]) -> None:
        super().__init__(name)
        self.ran = ran

    def execute(self) -> str:
        self.ran.append(self.name)
        return self.name


class LosingProgress:
    """Saves through the board; after ``lose_after`` is saved the claim runs out and a new owner takes the job."""

    def __init__(self, board: Any, claim: Any, rival: Any, lose_after: str) -> None:
        self.board, self.claim, self.rival, self.lose_after = board, claim, rival, lose_after

    def load(self) -> dict[str, dict[str, Any]]:
        return {}

    def save(self, atom_name: str, record: dict[str, Any]) -> None:
        claim = self.claim
        self.board.save_progress(claim.job_id, claim.owner, claim.token, atom_name, record)
        if atom_name == self.lose_after:
            # The lease runs out while the old owner is between two tasks...
            wait_until(lambda: self.board.claim_status(claim) is ClaimStatus.LOST, timeout=10)
            # ...and another conductor claims the job.
            wait_until(lambda: _try_claim(self.rival, claim.job_id), timeout=10)


def _try_claim(board: Any, job_id: str) -> bool:
    try:
        board.claim(job_id, "new-owner")
    except Exception:  # noqa: BLE001 - the server may not have expired the lease yet
        return False
    return True


@pytest.fixture(params=["memory", "sqlite"])
def boards(request):
    factory = request.getfixturevalue(f"{request.param}_board_factory")
    return factory(), factory()


@pytest.mark.parametrize("engine_kind", ["serial", "parallel"])
def test_a_stale_owner_starts_no_task_once_the_loss_is_known(boards, engine_kind):
    board, rival = boards
    job = board.post("j", "f", {})
    claim = board.claim(job, "old-owner", lease=0.3)
    ran: list[str] = []
    flow = linear_flow.Flow("f").add(Step("one", ran), Step("two", ran), Step("three", ran))
    progress = LosingProgress(board, claim, rival, lose_after="one")
    engine = engines.load(flow, engine=engine_kind, progress=progress)
    losses: list[str] = []

    def on_loss(eng: Any, state: str, details: dict[str, Any]) -> None:
        losses.append(state)
        eng.suspend()

    with CheckingClaimListener(engine, job, board, "old-owner", on_job_loss=on_loss):
        engine.run()
    # The loss was noticed when task two moved to RUNNING: two must not have run.
    assert ran == ["one"]
    assert losses == [states.RUNNING]
    assert engine.storage.get_flow_state() == states.SUSPENDED
    assert engine.storage.get_atom_state("two") == states.PENDING
    assert rival.find_owner(job.id) == "new-owner"


class SuspendedBoard(MemoryBoard):
    """A memory board whose connection can be marked suspended since a given moment."""

    uncertain_since: float | None = None
    bound = 5.0

    def _connection_uncertain(self) -> bool:
        return self.uncertain_since is not None

    def claim_uncertain_since(self, claim: Any) -> float | None:
        return self.uncertain_since

    def uncertain_claim_bound(self) -> float | None:
        return self.bound


class GoUncertain(Task):
    """Suspends the board's connection at local time 100."""

    def __init__(self, board: SuspendedBoard, ran: list[str]) -> None:
        super().__init__("go-uncertain")
        self.board, self.ran = board, ran

    def execute(self) -> None:
        self.ran.append(self.name)
        self.board.uncertain_since = 100.0


@pytest.mark.parametrize("now, trusted", [(104.0, True), (105.0, False)])
def test_an_uncertain_claim_stops_the_engine_after_the_boards_bound(now, trusted):
    name = f"uncertain-{uuid.uuid4().hex[:8]}"
    board = SuspendedBoard(name).connect()
    try:
        job = board.post("j", "f", {})
        board.claim(job, "me")
        ran: list[str] = []
        flow = linear_flow.Flow("f").add(GoUncertain(board, ran), Step("after", ran))
        engine = engines.load(flow)
        listener = CheckingClaimListener(engine, job, board, "me", clock=lambda: now)
        with listener:
            engine.run()
        assert board.claim_status(job.id) is ClaimStatus.UNCERTAIN
        if trusted:
            assert ran == ["go-uncertain", "after"]
            assert engine.storage.get_flow_state() == states.SUCCESS
            assert listener.claim_gone() is None
        else:
            assert ran == ["go-uncertain"]
            assert engine.storage.get_flow_state() == states.SUSPENDED
            assert listener.claim_gone() == "uncertain too long"
    finally:
        board.close()
        MemoryBoard.reset(name)
