"""``jobboard watch``: under a pseudo-terminal, without one, and its refresh policy
(in process, on ``memory://``)."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import threading
import time

from jobboard import JobBoard
from jobboard.admin.cli import EXIT_OK, Watch
from tests.admin.helpers import OWNER, ROOT, assert_fits, jb, populate
from tests.helpers import wait_until


class PtyReader:
    """Collect what a child writes to a pseudo-terminal; wait for text with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.text += os.read(self.fd, 65536).decode(errors="replace")
            except OSError:  # EIO: the child closed the terminal
                pass

    def wait_for(self, predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not seen within {timeout}s; output:\n{self.text[-2000:]}")
            self.pump(min(remaining, 0.2))


def test_watch_under_a_pty_refreshes_and_quits_on_sigint(real_board):
    url, board = real_board
    # Redis pushes other processes' events: a full refresh every minute must not be needed.
    interval = "60s" if url.startswith("redis") else "0.5s"
    board.post("first", "images")
    master, slave = os.openpty()
    environ = {**os.environ, "CONDUCTOR_BOARD": url, "COLUMNS": "80", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobboard", "watch", "--interval", interval],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    reader = PtyReader(master)
    try:
        # Given a live view of one waiting job
        reader.wait_for(lambda text: "waiting 1 " in text)
        # When jobs are posted and claimed by another process
        board.post("second", "images")
        reader.wait_for(lambda text: "waiting 2 " in text)
        claim = board.claim_next(OWNER, lease=300)
        reader.wait_for(lambda text: "claimed 1 " in text and claim.job_id[:8] in text)
        frames = reader.text.count("jobboard watch ")
        # Then Ctrl-C ends it cleanly
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            reader.pump(0.1)  # keep draining the terminal so the child never blocks on it
        assert proc.returncode == EXIT_OK, reader.text[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert frames >= 3
    assert "\x1b[2J" in reader.text  # a terminal gets a redrawn screen, not a scroll
    assert "Traceback" not in reader.text


def test_watch_without_a_terminal_prints_n_frames_and_exits(real_board):
    url, board = real_board
    populate(board)
    board.pause_flow("reports", reason="incident")

    done = jb(url, "watch", "--iterations", "2", "--interval", "0.2s")

    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.count("jobboard watch ") == 2 and "\x1b[" not in done.stdout
    assert "waiting 1   claimed 2   complete 1   failed 1   trashed 1   cancelled 1" in done.stdout
    assert_fits(done.stdout)
    # The conductors panel, and the claims with their job names
    assert "Conductors (1 live, 0 stale)" in done.stdout
    assert "conductor-1  images,reports" in done.stdout
    assert "claimed-job" in done.stdout and "ghost-job" in done.stdout
    assert "paused: reports" in done.stdout


class CountingBoard:
    """Wraps a board and counts the reads the watch makes."""

    def __init__(self, board: JobBoard) -> None:
        self.board = board
        self.reads = 0
        self.full_reads = 0

    def iterjobs(self, *args, **kwargs):
        self.reads += 1
        return self.board.iterjobs(*args, **kwargs)

    def stats(self):
        self.full_reads += 1
        return self.board.stats()

    def __getattr__(self, name: str):
        return getattr(self.board, name)




def test_watch_redraws_on_events_and_rate_limits_bursts(memory_board):
    spy = CountingBoard(memory_board)
    out = io.StringIO()
    watch = Watch(spy, out, label="memory://x", interval=60.0)  # type: ignore[arg-type]
    runner = threading.Thread(target=watch.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: watch.frames == 1)
        # When 200 jobs are posted in a burst and then one is claimed
        started = time.monotonic()
        for i in range(200):
            memory_board.post(f"job-{i}", "images")
        wait_until(lambda: "waiting 200 " in out.getvalue())
        claim = memory_board.claim_next(OWNER, lease=300)
        wait_until(lambda: "claimed 1 " in out.getvalue())
        elapsed = time.monotonic() - started
        # Then events drove the redraws, never more than one per MIN_GAP
        assert watch.frames <= 2 + elapsed / Watch.MIN_GAP + 1
        assert spy.reads == watch.frames or spy.reads == watch.frames + 1
        assert spy.full_reads == 1  # the finished counts were read once, at the start
        memory_board.consume(claim, OWNER, claim.token)
        wait_until(lambda: "complete 1 " in out.getvalue())
        assert spy.full_reads == 1  # a finishing event advances the count without a scan
    finally:
        watch.stop()
        runner.join(10)
    assert not runner.is_alive()
