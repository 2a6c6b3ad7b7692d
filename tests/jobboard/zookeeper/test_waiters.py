"""Idle boards queue on a ZooKeeper board: a post wakes the first in line only,
and the turn passes on when it is busy or stops; the view takes a large listing
without parsing every name."""

from __future__ import annotations

import threading

import pytest

from jobboard import unique_owner
from jobboard.zookeeper.localview import View
from tests.helpers import wait_until
from tests.jobboard.zookeeper.conftest import node

pytestmark = pytest.mark.zookeeper


def _waiter(board, flows, woke: threading.Event, stop: threading.Event) -> threading.Thread:
    """A thread that waits on ``board`` (as an idle conductor would) until ``stop``."""

    def run() -> None:
        while not stop.is_set():
            if board.wait(timeout=0.2, flows=flows):
                woke.set()
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_post_wakes_only_the_first_idle_board_then_the_turn_passes_on(
    zookeeper_board_factory, raw
):
    # Given three idle boards queued for flow f, the first one first in line
    boards = [zookeeper_board_factory() for _ in range(3)]
    producer = zookeeper_board_factory()
    stop = threading.Event()
    woke = [threading.Event() for _ in boards]
    threads = []
    for board, event in zip(boards, woke, strict=True):
        threads.append(_waiter(board, ["f"], event, stop))
        wait_until(lambda b=board: b._places, timeout=10)
    waiters = node(boards[0], "waiters")
    assert len(raw.get_children(f"{waiters}/{raw.get_children(waiters)[0]}")) == 3
    # When a job is posted, only the first in line wakes; the others cannot claim
    first = producer.post("one", "f")
    assert woke[0].wait(10)
    assert not woke[1].is_set() and not woke[2].is_set()
    assert boards[1].claim_next(unique_owner("b"), ["f"]) is None
    claim = boards[0].claim_next(unique_owner("a"), ["f"])
    assert claim is not None and claim.job_id == first.id
    # Then while the first is busy with it, a second job wakes the next in line
    second = producer.post("two", "f")
    assert woke[1].wait(10)
    assert not woke[2].is_set()
    other = boards[1].claim_next(unique_owner("b"), ["f"])
    assert other is not None and other.job_id == second.id
    stop.set()
    for thread in threads:
        thread.join(5)


def test_a_board_that_stops_waiting_hands_its_turn_on(zookeeper_board_factory):
    # Given two idle boards queued for any flow
    first, second = zookeeper_board_factory(), zookeeper_board_factory()
    producer = zookeeper_board_factory()
    stop = threading.Event()
    assert first.wait(timeout=0.05) is False  # first in line
    woke = threading.Event()
    thread = _waiter(second, None, woke, stop)
    wait_until(lambda: second._places, timeout=10)
    # When the first stops waiting (a conductor stopping) and a job comes
    first.stop_waiting()
    producer.post("j", "f")
    # Then the second wakes and claims it
    assert woke.wait(10)
    assert second.claim_next(unique_owner("b")) is not None
    stop.set()
    thread.join(5)


def test_a_large_listing_is_taken_in_claim_order_without_its_junk():
    # Given a listing of many ids of two flows and three priorities, plus junk names
    ids = [f"p{rank}+{flow}+{seq:010d}" for seq in range(300) for rank, flow in
           ((2, "a"), (0, "b"), (4, "a"))]  # fmt: skip
    ids[5] = "p2+a+0000000005"  # a repeat
    junk = ["p2+a+notanumber", "x+y+z", "p9+a+0000000001"]
    view = View()
    # When it is applied in one batch
    added, removed = view.listing("jobs", ids + junk, pzxid=1, sent_gen=0)
    # Then the junk is left out and jobs come out by priority, then post order
    assert added == set(ids) and not removed
    order = [view.best(None, pop=True) for _ in range(len(set(ids)))]
    assert order == sorted(set(ids), key=lambda i: (int(i[1]), int(i.rsplit("+", 1)[1])))
    assert view.best(None, pop=False) is None
    # And a listing no newer than the last one changes nothing
    assert view.listing("jobs", [], pzxid=1, sent_gen=0) is None
