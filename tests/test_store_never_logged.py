"""A job's store never reaches a log line, not even through a claim loss (issue 9, item 10).

A real conductor on a real SQLite board runs a job whose store carries a
marker; an operator takes the job away mid-run. Every record logged meanwhile,
at any level and with its traceback, is free of the marker and stays short.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import jobboard
from conductor.conductor import Conductor, ConductorEvents
from jobboard import Claim, Job
from tests import flows_for_tests
from tests.fixtures import sqlite_url
from tests.flows_for_tests import FLOWS
from tests.helpers import wait_until

MARKER = "store-content-must-not-be-logged"
#: Longest log line accepted (a repr of a job is a few hundred characters).
LONGEST_LINE = 2000


def test_claim_loss_logs_no_store_and_short_lines(tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    board = jobboard.connect(sqlite_url(tmp_path / "board.db", lease=2))
    gate = tmp_path / "gate"
    store = {"spec": {"block_at": "two", "gate": str(gate)}, "blob": MARKER * 20_000}
    job = board.post("j", "steps", store)
    flows_for_tests.RECORDED.clear()
    conductor = Conductor("first", board, FLOWS)
    lost = threading.Event()
    conductor.notifier.register(ConductorEvents.CLAIM_LOST, lambda event, details: lost.set())
    thread = threading.Thread(target=conductor.run, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: any(
                r["task"] == "two" and r["event"] == "start" for r in flows_for_tests.RECORDED
            ),
            timeout=10,
            message="the job runs its second task",
        )
        board.abandon(job.id, "operator", force=True, reason="taken away")
        gate.touch()
        assert lost.wait(15), "the conductor never noticed the loss"
    finally:
        conductor.stop(timeout=5)
        thread.join(20)
        board.close()
    assert caplog.records, "nothing was logged"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings, "the claim loss logged no warning"
    for record in caplog.records:
        line = record.getMessage()
        assert MARKER not in line, f"store content logged: {line[:200]}"
        assert len(line) <= LONGEST_LINE, f"a {len(line)}-character log line: {line[:200]}"
    assert MARKER not in caplog.text


def test_job_and_claim_reprs_leave_out_what_the_job_carries():
    job = Job("a", "n" * 500, "f", {"blob": MARKER}, result={"r": MARKER}, last_error=MARKER)
    claim = Claim("a", "me", 1, job=job)
    for text in (repr(job), repr(claim), str(job)):
        assert MARKER not in text and len(text) < 400
    assert "…(502 chars)" in repr(job)
