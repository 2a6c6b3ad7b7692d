"""The commands that change the board: ``post``, ``abandon``, ``trash``, ``cancel``,
``retry``, ``purge``, run as real processes; refusals change nothing."""

from __future__ import annotations

import pytest

import jobboard
from jobboard import JobState
from jobboard.admin.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from tests.admin.helpers import OWNER, assert_one_line_error, jb, populate


def test_post_prints_the_id_of_the_job_it_posted(real_board, tmp_path):
    url, board = real_board
    store_file = tmp_path / "store.json"
    store_file.write_text('{"image": 7, "sizes": [1, 2]}')

    inline = jb(url, "post", "resize-1", "--flow", "images", "--store", '{"image": 6}')
    from_file = jb(
        url, "post", "resize-2", "--flow", "images", "--store", f"@{store_file}",
        "--priority", "very_high", "--max-attempts", "3",
    )  # fmt: skip

    assert inline.returncode == EXIT_OK and from_file.returncode == EXIT_OK
    first = board.get(inline.stdout.strip())
    second = board.get(from_file.stdout.strip())
    assert (first.name, first.flow, first.store) == ("resize-1", "images", {"image": 6})
    assert second.store == {"image": 7, "sizes": [1, 2]}
    assert second.priority == "VERY_HIGH" and second.max_attempts == 3


@pytest.mark.parametrize(
    "args,words",
    [
        (["--store", "{not json"], ["not valid JSON"]),
        (["--store", "[1, 2]"], ["must be a JSON object"]),
        (["--store", "@/nonexistent/store.json"], ["cannot read store file"]),
        (["--max-attempts", "0"], ["max_attempts"]),
    ],
    ids=["bad-json", "not-object", "no-file", "bad-attempts"],
)
def test_post_rejects_bad_input_as_usage_errors(real_board, args, words):
    url, board = real_board

    done = jb(url, "post", "x", "--flow", "images", *args)

    assert_one_line_error(done, EXIT_USAGE, *words)
    assert list(board.iterjobs()) == []


def test_post_bad_flow_and_priority_are_usage_errors(real_board):
    url, board = real_board

    bad_flow = jb(url, "post", "x", "--flow", "no spaces allowed")
    bad_priority = jb(url, "post", "x", "--flow", "images", "--priority", "urgent")

    assert_one_line_error(bad_flow, EXIT_USAGE, "flow")
    assert bad_priority.returncode == EXIT_USAGE and "invalid priority" in bad_priority.stderr
    assert list(board.iterjobs()) == []


def test_abandon_refuses_unclaimed_asks_then_releases(real_board):
    url, board = real_board
    jobs = populate(board)
    claimed = jobs["claimed"]

    wrong = jb(url, "abandon", jobs["waiting"].id, "--yes")
    declined = jb(url, "abandon", claimed.id, stdin="n\n")
    unchanged = board.get(claimed)
    accepted = jb(url, "abandon", claimed.id, "--reason", "host draining", stdin="y\n")

    assert_one_line_error(wrong, EXIT_REFUSED, "refused: cannot abandon", "it must be claimed")
    assert_one_line_error(declined, EXIT_REFUSED, "not confirmed")
    assert unchanged.state is JobState.CLAIMED and unchanged.owner == OWNER
    assert accepted.returncode == EXIT_OK, accepted.stderr
    assert "Abandon job" in accepted.stderr  # the question was asked
    after = board.get(claimed)
    assert after.state is JobState.WAITING and after.last_error == "host draining"
    with pytest.raises(jobboard.NotOwner):  # the old owner's token is stale now
        board.save_progress(claimed, OWNER, claimed.token, "fetch", {"state": "SUCCESS"})


def test_trash_refuses_finished_jobs_and_trashes_with_reason(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "trash", jobs["complete"].id, "--yes")
    done = jb(url, "trash", jobs["ghost"].id, "--reason", "poison input", "--yes")

    assert_one_line_error(wrong, EXIT_REFUSED, "complete")
    assert board.get(jobs["complete"]).state is JobState.COMPLETE
    assert done.returncode == EXIT_OK, done.stderr
    after = board.get(jobs["ghost"])
    assert after.state is JobState.TRASHED and after.last_error == "poison input"


def test_cancel_waiting_now_claimed_by_flag_finished_refused(real_board):
    url, board = real_board
    jobs = populate(board)

    waiting = jb(url, "cancel", jobs["waiting"].id, "--yes")
    claimed = jb(url, "cancel", jobs["claimed"].id, "--yes")
    finished = jb(url, "cancel", jobs["failed"].id, "--yes")

    assert waiting.returncode == EXIT_OK and "cancelled" in waiting.stdout
    assert board.get(jobs["waiting"]).state is JobState.CANCELLED
    assert claimed.returncode == EXIT_OK and "cancel requested" in claimed.stdout
    after = board.get(jobs["claimed"])
    assert after.state is JobState.CLAIMED and after.cancel_requested
    assert_one_line_error(finished, EXIT_REFUSED, "failed")


def test_retry_reposts_failed_trashed_and_cancelled_jobs(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "retry", jobs["waiting"].id, "--yes")
    retried = {k: jb(url, "retry", jobs[k].id, "--yes") for k in ("failed", "trashed", "cancelled")}

    assert_one_line_error(wrong, EXIT_REFUSED, "waiting")
    for key, done in retried.items():
        assert done.returncode == EXIT_OK, done.stderr
        old, new = jobs[key], board.get(done.stdout.strip())
        assert new.id != old.id and new.state is JobState.WAITING
        assert (new.name, new.flow, new.store, new.priority, new.max_attempts) == (
            old.name, old.flow, old.store, old.priority, old.max_attempts,
        )  # fmt: skip
        assert new.details["retry_of"] == old.id
    assert board.get(jobs["failed"]).state is JobState.FAILED  # the original is kept


def test_purge_refuses_unfinished_states_and_deletes_old_finished_jobs(real_board):
    url, board = real_board
    jobs = populate(board)

    wrong = jb(url, "purge", "--state", "waiting", "--older-than", "0s", "--yes")
    too_young = jb(url, "purge", "--state", "complete", "--older-than", "1d", "--yes")
    declined = jb(url, "purge", "--state", "complete", "--older-than", "0s")  # stdin: EOF
    still_there = board.get(jobs["complete"])
    done = jb(url, "purge", "--state", "complete", "--older-than", "0s", "--yes")

    assert_one_line_error(wrong, EXIT_REFUSED, "only finished jobs")
    assert too_young.returncode == EXIT_OK and "nothing to purge" in too_young.stdout
    assert_one_line_error(declined, EXIT_REFUSED, "not confirmed")
    assert still_there.state is JobState.COMPLETE
    assert done.returncode == EXIT_OK and "purged 1 jobs" in done.stdout
    with pytest.raises(jobboard.JobNotFound):
        board.get(jobs["complete"])
    assert board.get(jobs["failed"]).state is JobState.FAILED
