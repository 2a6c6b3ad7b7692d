"""Child jobs with real conductors on SQLite: post and wait, takeover, cancel cascade."""

from __future__ import annotations

import json
import os
import signal

import pytest

from jobboard import JobState
from jobboard.admin.console import EXIT_OK
from tests.admin.helpers import jb
from tests.conductor.fleet import board_url_for
from tests.helpers import wait_until


@pytest.fixture
def board_url(request, tmp_path):
    return board_url_for("sqlite", request, tmp_path)


def test_a_parent_posts_three_children_and_waits_for_them(board, fleet, board_url):
    fleet.start("c1", "--max-jobs", "4")
    parent = board.post("nightly", "parent", {"spec": {"children": 3}})
    done = board.wait_for(parent, timeout=60)
    assert done.state is JobState.COMPLETE, done.last_error
    assert done.result == {"children": ["complete"] * 3}
    kids = board.children(parent)
    assert len(kids) == 3 and {k.parent for k in kids} == {parent.id}
    shown = jb(board_url, "show", parent.id)
    assert shown.returncode == EXIT_OK and "Children (3)" in shown.stdout
    child = jb(board_url, "show", kids[0].id, "--json")
    assert json.loads(child.stdout)["parent"]["id"] == parent.id


def test_a_parent_taken_over_finds_the_children_it_posted(board, fleet, tmp_path):
    gate = tmp_path / "gate"
    spec = {"children": 3, "child": {"block_at": "one", "gate": str(gate)}}
    first = fleet.start("c1")  # one slot: busy with the parent, children wait
    parent = board.post("nightly", "parent", {"spec": spec})
    wait_until(lambda: fleet.records("posted", parent.id), timeout=30)
    fleet.start("kids", "--max-jobs", "3")  # the children run here...
    kids = board.children(parent)
    wait_until(lambda: all(fleet.records("start", k.id) for k in kids), timeout=30)
    os.kill(first.pid, signal.SIGKILL)  # ... while the parent's conductor dies
    first.wait(10)
    fleet.start("c2")
    wait_until(lambda: len(fleet.records("posted", parent.id)) == 2, timeout=30)
    gate.touch()
    done = board.wait_for(parent, timeout=60)
    assert done.state is JobState.COMPLETE, done.last_error
    assert len(fleet.records("start", parent.id)) == 2  # it really ran again
    assert len(board.children(parent)) == 3  # ... and posted nothing new
    assert done.result == {"children": ["complete"] * 3}


def test_cancelling_a_parent_cancels_its_unfinished_children(board, fleet, board_url, tmp_path):
    child = {"mode": "cooperative", "gate": str(tmp_path / "never")}
    spec = {"children": 2, "child_flow": "long", "child": child}
    fleet.start("c1", "--max-jobs", "2")  # the parent and one child run; the other waits
    parent = board.post("nightly", "parent", {"spec": spec})
    wait_until(lambda: fleet.records("posted", parent.id), timeout=30)
    wait_until(lambda: any(k.state is JobState.CLAIMED for k in board.children(parent)))
    board.cancel(parent)  # the running parent: its conductor cascades
    assert board.wait_for(parent, timeout=30).state is JobState.CANCELLED
    for kid in board.children(parent):
        assert board.wait_for(kid, timeout=30).state is JobState.CANCELLED

    # An operator's cancel of a parent that is not running cascades too.
    idle = board.post("idle", "not-served", {})
    kid = board.post("part", "steps", {"spec": {}}, parent=idle, delay=3600)
    done = jb(board_url, "cancel", idle.id, "--yes")
    assert done.returncode == EXIT_OK and "1 unfinished child" in done.stdout
    assert board.get(kid).state is JobState.CANCELLED
