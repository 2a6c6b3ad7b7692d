"""Two real conductors on one SQLite board promote a schedule: each tick becomes one job."""

from __future__ import annotations

import pytest

from jobboard.admin.console import EXIT_OK
from tests.admin.helpers import jb
from tests.conductor.fleet import board_url_for
from tests.helpers import wait_until


@pytest.fixture
def board_url(request, tmp_path):
    return board_url_for("sqlite", request, tmp_path)


def test_two_conductors_post_each_tick_once(board, fleet, board_url):
    added = jb(board_url, "schedule", "add", "beat", "--flow", "steps", "--every", "0.5",
               "--store", '{"spec": {}}')
    assert added.returncode == EXIT_OK, added.stderr
    listed = jb(board_url, "schedule", "list")
    assert "no live conductor serves flow steps" in listed.stdout
    fleet.start("c1")
    fleet.start("c2")
    wait_until(lambda: len(list(board.iterjobs(states=["complete"]))) >= 4, timeout=30)
    jb(board_url, "schedule", "pause", "beat")
    jobs = [j for j in board.iterjobs(states=["waiting", "claimed", "complete"])]
    ticks = sorted(j.details["tick"] for j in jobs)
    assert len(ticks) == len(set(ticks)) >= 4
    steps = {round(b - a, 3) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert all(s % 0.5 == 0 for s in steps), steps
    listed = jb(board_url, "schedule", "list")
    assert "paused" in listed.stdout and "no live conductor" not in listed.stdout
