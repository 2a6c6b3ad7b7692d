"""What the admin tool's tests share: a board with a job in every state, and running
``python -m jobboard`` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobboard import JobBoard
from jobboard.admin import render
from jobboard.admin.cli import EXIT_OK
from jobboard.base import Job

ROOT = Path(__file__).resolve().parents[2]
OWNER = "conductor-1@host-a:4242:abcd1234"
GHOST = "ghost@elsewhere:99:deadbeef"
JOB_FIELDS = set(Job.__dataclass_fields__)
CLAIM_KEYS = {
    "job", "name", "flow", "owner", "token", "attempts", "claimed_at", "age",
    "lease_expires_at", "lease_left", "cancel_requested", "flags", "suspicious",
}  # fmt: skip
TASK_KEYS = {
    "task", "state", "host", "start", "durations", "success", "result", "error",
    "conductor", "execution",
}  # fmt: skip
EXPORT_KEYS = {
    "job", "job_name", "flow", "job_state", "task", "state", "conductor", "host",
    "durations", "success", "error", *render.EXECUTION_TIMES,
}  # fmt: skip


def execution(host: str, t0: float, *, ok: bool = True) -> dict[str, Any]:
    """A progress record as the engine saves it: 10 ms input, 400 ms task, 10 ms result."""
    return {
        "state": "SUCCESS" if ok else "FAILURE",
        "result": {"pixels": 42} if ok else None,
        "failure": None if ok else {"exc_type_names": ["ValueError"], "exception_str": "bad px"},
        "execution": {
            "hostname": host,
            "submit_time": t0,
            "received_time": t0 + 0.5,
            "execution_start_time": t0 + 0.01,
            "input_transform_start_time": t0 + 0.01,
            "input_transform_end_time": t0 + 0.02,
            "task_start_time": t0 + 0.02,
            "task_end_time": t0 + 0.42,
            "result_transform_start_time": t0 + 0.42,
            "result_transform_end_time": t0 + 0.43,
            "execution_end_time": t0 + 0.45,
            "success": ok,
            "exception": None if ok else {"exc_type": "ValueError", "message": "bad px"},
        },
        "metadata": {"conductor": OWNER},
    }


def populate(board: JobBoard) -> dict[str, Job]:
    """One job in every state (two claimed: one by a registered conductor, one not)."""
    t0 = time.time() - 60
    jobs = {"waiting": board.post("waiting-job", "images", {"image": 1})}
    jobs["claimed"] = board.post("claimed-job", "images", {"image": 2}, priority="high")
    claim = board.claim(jobs["claimed"], OWNER, lease=300)
    board.save_progress(claim, OWNER, claim.token, "fetch", execution("host-a", t0))
    board.save_progress(claim, OWNER, claim.token, "resize", execution("host-a", t0 + 1, ok=False))
    board.save_progress(claim, OWNER, claim.token, "publish", {"state": "PENDING"})
    jobs["ghost"] = board.post("ghost-job", "images", {"image": 3})
    board.claim(jobs["ghost"], GHOST, lease=300)
    jobs["complete"] = board.post("complete-job", "reports", {"day": 1})
    claim = board.claim(jobs["complete"], OWNER, lease=300)
    board.save_progress(claim, OWNER, claim.token, "render", execution("host-b", t0 + 2))
    board.consume(claim, OWNER, claim.token, result={"pages": 3})
    jobs["failed"] = board.post("failed-job", "reports", {"day": 2}, max_attempts=3)
    claim = board.claim(jobs["failed"], OWNER, lease=300)
    board.fail(claim, OWNER, claim.token, error="ValueError: bad day")
    jobs["trashed"] = board.post("trashed-job", "images", {"image": 4})
    board.trash(jobs["trashed"], "operator@test", force=True, reason="poison input")
    jobs["cancelled"] = board.post("cancelled-job", "images", {"image": 5})
    board.cancel(jobs["cancelled"])
    jobs["scheduled"] = board.post("scheduled-job", "images", {"image": 6}, delay=3600)
    board.register_entity(
        "conductor-1",
        metadata={"host": "host-a", "pid": 4242, "flows": ["images", "reports"], "running": 1},
    )
    return {k: board.get(j) for k, j in jobs.items()}


def jb(url: str | None, *args: str, stdin: str = "", env: dict | None = None):
    """Run ``python -m jobboard ARGS`` with the board in ``$CONDUCTOR_BOARD``."""
    environ = {**os.environ, "COLUMNS": "80", **(env or {})}
    environ.pop("CONDUCTOR_BOARD", None)
    if url is not None:
        environ["CONDUCTOR_BOARD"] = url
    return subprocess.run(
        [sys.executable, "-m", "jobboard", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=ROOT,
    )


def jb_json(url: str, *args: str) -> Any:
    done = jb(url, *args, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done, code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [x for x in done.stderr.strip().splitlines() if not x.endswith("[y/N] ")]
    assert len(lines) == 1 and lines[0].startswith("jobboard: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide
