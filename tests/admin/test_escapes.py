"""Admin output is terminal-safe and error messages echo input capped (issue 9, item 11).

Names, flows and errors come from anyone who can post; printed raw, an escape
sequence repaints the operator's screen. Every text page shows control
characters as visible escapes; JSON output escapes them as JSON does.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

import jobboard
from jobboard import InvalidJob
from jobboard.admin import render
from jobboard.admin.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from tests.admin.helpers import assert_one_line_error, jb

#: A job name that clears the screen, sets the title, rings and hides text behind a bidi override.
EVIL_NAME = "pay\x1b[2J\x1b]0;pwned\x07roll\u202etxt.exe\r"
EVIL_ERROR = "boom\x1b[31m red\x1b[0m\x9b1m"
RAW = ("\x1b", "\x07", "\u202e", "\r", "\x9b")


@pytest.fixture
def evil_board(tmp_path):
    """A SQLite board with a job whose name, flow and error carry control characters."""
    path = tmp_path / "board.db"
    url = f"sqlite://{path.resolve()}"
    board = jobboard.connect(url)
    job = board.post(EVIL_NAME, "flow-a")
    claim = board.claim(job, "me")
    board.fail(claim, "me", claim.token, error=EVIL_ERROR)
    waiting = board.post("second", "flow-b")
    board.close()
    # The flow is validated at post; a record written by other means may still carry one.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE jobs SET flow = ? WHERE id = ?", ("fl\x1b[5mow", waiting.id))
    return url, job.id, waiting.id


def _assert_safe(text: str) -> None:
    for char in RAW:
        assert char not in text, f"raw {char!r} printed: {text!r}"


def test_list_show_and_watch_escape_control_characters(evil_board):
    url, failed, waiting = evil_board
    for args in (
        ("list", "--state", "all"),
        ("show", failed),
        ("show", waiting),
        ("watch", "--iterations", "1"),
    ):
        done = jb(url, *args)
        assert done.returncode == EXIT_OK, (args, done.stderr)
        _assert_safe(done.stdout)
        _assert_safe(done.stderr)
    shown = jb(url, "show", failed).stdout
    assert "\\x1b[2J" in shown and "\\u202e" in shown and "\\x1b[31m" in shown
    assert "\\x1b[5m" in jb(url, "show", waiting).stdout


def test_questions_and_refusals_escape_control_characters(evil_board):
    url, failed, _ = evil_board
    done = jb(url, "cancel", failed, stdin="n\n")
    assert done.returncode == EXIT_REFUSED
    _assert_safe(done.stderr)
    assert "\\x1b" in done.stderr


def test_json_output_keeps_the_text_exactly(evil_board):
    url, failed, _ = evil_board
    done = jb(url, "show", failed, "--json")
    assert done.returncode == EXIT_OK
    _assert_safe(done.stdout)
    assert json.loads(done.stdout)["job"]["name"] == EVIL_NAME


def test_printable_keeps_plain_text_and_line_breaks():
    assert render.printable("plain é 中文 ✓\nnext\tline") == "plain é 中文 ✓\nnext\tline"
    assert render.printable("a\x1bb\x00c\u200bd") == "a\\x1bb\\x00c\\u200bd"


def test_a_huge_name_gives_a_short_error(tmp_path):
    board = jobboard.connect(f"sqlite://{tmp_path.resolve()}/board.db")
    try:
        with pytest.raises(InvalidJob) as raised:
            board.post("n" * 1_000_000, "flow-a")
        with pytest.raises(InvalidJob) as bad_flow:
            board.post("j", "f" * 1_000_000)
        with pytest.raises(jobboard.JobNotFound) as unknown:
            board.get("x" * 1_000_000)
    finally:
        board.close()
    for err in (raised.value, bad_flow.value, unknown.value):
        assert len(str(err)) < 400, str(err)[:200]
    assert "(1000002 chars)" in str(raised.value)


def test_the_admin_tool_echoes_a_huge_argument_capped(tmp_path):
    url = f"sqlite://{tmp_path.resolve()}/board.db"
    done = jb(url, "post", "n" * 100_000, "--flow", "flow-a")
    assert_one_line_error(done, EXIT_USAGE, "name")
    assert len(done.stderr) < 500
    done = jb(url, "show", "\x1b[2J" + "y" * 100_000)
    assert_one_line_error(done, EXIT_REFUSED, "no job")
    _assert_safe(done.stderr)
    assert len(done.stderr) < 500
