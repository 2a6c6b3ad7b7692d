"""``jobboard post --wait`` against a real conductor on SQLite: the outcome decides the exit code."""

from __future__ import annotations

import json

import pytest

from jobboard import JobState
from jobboard.admin.console import EXIT_OK, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_USAGE
from tests.admin.helpers import jb
from tests.conductor.fleet import board_url_for


@pytest.fixture
def board_url(request, tmp_path):
    return board_url_for("sqlite", request, tmp_path)


def test_post_wait_prints_the_result_and_exits_by_outcome(board, fleet, board_url):
    fleet.start("c1")
    ok = json.dumps({"spec": {}})
    done = jb(board_url, "post", "ok", "--flow", "steps", "--store", ok, "--wait", "--timeout", "60")
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout) is not None

    store = json.dumps({"spec": {"fail_at": "two"}})
    failed = jb(board_url, "post", "bad", "--flow", "steps", "--store", store,
                "--max-attempts", "1", "--wait", "--timeout", "60")
    assert failed.returncode == EXIT_REFUSED, failed.stderr
    assert "failed" in failed.stdout and "two failed on purpose" in failed.stdout


def test_post_wait_times_out_with_its_own_code(board, board_url):
    # No conductor: the job stays waiting.
    done = jb(board_url, "post", "idle", "--flow", "steps", "--wait", "--timeout", "0.3")
    assert done.returncode == EXIT_TIMEOUT, done.stderr
    assert "still waiting" in done.stdout
    assert [j.state for j in board.iterjobs()] == [JobState.WAITING]


def test_post_key_delay_and_not_before(board, board_url):
    first = jb(board_url, "post", "r", "--flow", "steps", "--key", "k1", "--delay", "1h")
    again = jb(board_url, "post", "r", "--flow", "steps", "--key", "k1")
    assert first.returncode == again.returncode == EXIT_OK, first.stderr + again.stderr
    assert first.stdout == again.stdout
    job = board.get(first.stdout.strip())
    assert job.state is JobState.SCHEDULED and job.key == "k1"
    later = jb(board_url, "post", "t", "--flow", "steps", "--not-before", "2099-01-01T00:00:00Z")
    assert board.get(later.stdout.strip()).state is JobState.SCHEDULED
    both = jb(board_url, "post", "x", "--flow", "steps", "--delay", "1", "--not-before", "1")
    assert both.returncode == EXIT_USAGE
    bad = jb(board_url, "post", "x", "--flow", "steps", "--not-before", "2h")
    assert bad.returncode == EXIT_USAGE and "--delay" in bad.stderr
