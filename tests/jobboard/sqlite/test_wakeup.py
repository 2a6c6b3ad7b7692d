"""A post by another process wakes a waiting SQLite board at once (issue 15, item 3).

The wake-up is a push (inotify on the database's directory), not a faster
poll: with the poll slowed to minutes, a waiter still learns of another
process's post; without inotify the board falls back to its poll. Only
waiting boards watch: a busy process is not woken by every write of others.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import jobboard
from jobboard.sqlite import wakeup
from tests.fixtures import sqlite_url
from tests.helpers import wait_until

#: Long enough that a test passing within its bound cannot have been woken by the poll.
SLOW_POLL = 120.0


def _post_from_another_process(*urls: str) -> None:
    code = "import jobboard\n" + "".join(
        f"b = jobboard.connect({url!r}); b.post('j', 'flow-a'); b.close()\n" for url in urls
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _slow_board(url: str):
    board = jobboard.connect(url)
    board.POLL_MIN = board.POLL_MAX = board.PUSHED_POLL = SLOW_POLL
    return board


def _waiting(board) -> tuple[threading.Thread, list[bool]]:
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(board.wait(timeout=30)), daemon=True)
    waiter.start()
    wait_until(lambda: board.polls >= 1, message="the watcher read data_version once")
    return waiter, seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_post_by_another_process_wakes_a_waiter_without_polling(tmp_path: Path):
    url = sqlite_url(tmp_path / "board.db")
    board = _slow_board(url)
    try:
        waiter, seen = _waiting(board)
        polls = board.polls
        _post_from_another_process(url)
        waiter.join(30)
        assert seen == [True], "the waiter was not woken by the other process's post"
        assert board.pushed
        # Woken by the push: a read or two of data_version, not a poll loop.
        assert board.polls - polls <= 4
        claim = board.claim_next("me")
        assert claim is not None
    finally:
        board.close()


def test_without_inotify_the_board_polls(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(wakeup, "subscribe", lambda path, callback: None)
    url = sqlite_url(tmp_path / "board.db")
    board = jobboard.connect(url)
    try:
        waiter, seen = _waiting(board)
        _post_from_another_process(url)
        waiter.join(30)
        assert seen == [True] and not board.pushed
    finally:
        board.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_waiting_boards_share_one_watch_dropped_when_nobody_waits(tmp_path: Path):
    # Three namespaces: each board heads its own queue of idle boards, so each arms.
    urls = [sqlite_url(tmp_path / "board.db", namespace=f"ns{i}") for i in range(3)]
    directory = str(tmp_path.resolve()).encode()
    boards = [_slow_board(url) for url in urls]

    def watching() -> list[int]:
        return [
            wd
            for wd, subs in wakeup._INOTIFY.by_wd.items()
            for sub in subs
            if sub.directory == directory
        ]

    try:
        waiting = [_waiting(board) for board in boards]
        wait_until(lambda: all(b.pushed for b in boards), message="every waiter armed")
        assert len(watching()) == 3 and len(set(watching())) == 1  # one kernel watch
        _post_from_another_process(*urls)
        for waiter, seen in waiting:
            waiter.join(30)
            assert seen == [True]
        # Nobody waits any more: a busy process is not woken by others' writes.
        assert watching() == []
    finally:
        for board in boards:
            board.close()


def test_interrupt_wait_ends_a_blocked_wait_and_the_next_one(tmp_path: Path):
    board = _slow_board(sqlite_url(tmp_path / "board.db"))
    try:
        assert board.WAIT_INTERRUPTIBLE
        waiter, seen = _waiting(board)
        board.interrupt_wait()
        waiter.join(30)
        assert seen == [False]
        # An interrupt nobody was waiting for ends the next wait (a stop racing the claim loop).
        board.interrupt_wait()
        assert board.wait(timeout=30) is False
        board.post("j", "flow-a")
        assert board.wait(timeout=30) is True  # the interrupt was used up
    finally:
        board.close()
