"""The dashboard in a real headless browser (Debian's Chromium driven by Playwright).

``jobboard serve`` runs as a real process on a SQLite board file; real
conductors (threads of this process, the test flows) run the jobs. The test
checks that the page lists posted jobs, updates without a reload when a job
is posted and when jobs complete, and that a job page draws the timeline of
its tasks with the attempts and conductors told apart. It writes the
screenshots that docs/dashboard.md shows: into docs/images/ when
``CONDUCTOR_SCREENSHOTS=1`` is set (to refresh the docs), else into the test's
temporary folder, so a test run leaves the work tree as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jobboard
from conductor.conductor import Conductor
from jobboard.base import unique_owner
from tests.admin.web.conftest import TOKEN
from tests.fixtures import sqlite_url
from tests.flows_for_tests import FLOWS
from tests.helpers import wait_until
from tests.servers import free_port, missing_server, port_open

ROOT = Path(__file__).resolve().parents[3]
DOC_IMAGES = ROOT / "docs" / "images"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "s3cr3t-never-shown"
#: Longest wait for the page to show a change (the server re-reads every 0.5 s).
UI_WAIT_MS = 15_000


@pytest.fixture
def browser():
    """A headless Chromium (the system's; nothing is downloaded)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        missing_server("chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class ServeProcess:
    """``python -m jobboard serve`` on a free loopback port."""

    def __init__(self, url: str, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobboard", "serve", "--board", url, "--port", str(self.port),
             "--refresh", "0.5", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout=30)
        if self.proc.poll() is not None:
            raise AssertionError(f"jobboard serve exited:\n{self.proc.communicate()[0]}")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """SIGTERM, then the output; a clean stop exits 0."""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        assert self.proc.returncode == 0, f"jobboard serve exited {self.proc.returncode}:\n{out}"
        return out


class Conductors:
    """Real conductors in threads, each on its own board connection."""

    def __init__(self) -> None:
        self.items: list[tuple[Conductor, threading.Thread]] = []

    def start(self, board: jobboard.JobBoard, name: str) -> Conductor:
        conductor = Conductor(name, board, FLOWS)
        thread = threading.Thread(target=conductor.run, name=f"run-{name}", daemon=True)
        thread.start()
        self.items.append((conductor, thread))
        return conductor

    def cancel_seen(self, job_id: str) -> bool:
        """Whether the conductor running ``job_id`` has seen its cancel request."""
        return any(
            r.cancel_seen for c, _ in self.items for r in c.running_jobs if r.job.id == job_id
        )

    def stop(self) -> None:
        for conductor, _ in self.items:
            conductor.stop(timeout=5)
        for conductor, thread in self.items:
            thread.join(20)
            assert not thread.is_alive(), f"{conductor.name} did not stop"


def step_record(name: str, conductor: str, owner: str, token: int, start: float) -> dict[str, Any]:
    """A finished step's progress record as a conductor saves it (so a takeover resumes)."""
    end = start + 0.35
    return {
        "state": "SUCCESS",
        "result": f"{name}-ok",
        "failure": None,
        "execution": {
            "task_id": f"{name}-0001", "name": name, "parent_task_ids": [],
            "submit_time": start, "received_time": end, "success": True, "exception": None,
            "attempt": 1,
            "execution": {
                "hostname": "host-old", "execution_start_time": start, "execution_end_time": end,
                "input_transform_start_time": start, "input_transform_end_time": start + 0.02,
                "task_start_time": start + 0.02, "task_end_time": end - 0.02,
                "result_transform_start_time": end - 0.02, "result_transform_end_time": end,
            },
        },
        "metadata": {"conductor": conductor, "owner": owner, "token": token},
    }  # fmt: skip


def test_dashboard_lists_updates_live_and_draws_timelines(
    browser, sqlite_board_factory, sqlite_path, tmp_path
):
    board = sqlite_board_factory()
    producer = sqlite_board_factory()
    url = sqlite_url(sqlite_path, namespace=board.namespace)
    images = DOC_IMAGES if os.environ.get("CONDUCTOR_SCREENSHOTS") else tmp_path / "images"
    spec = {"pause": 0.3}
    first = board.post("resize-101", "steps", {"spec": spec, "db_password": SECRET})
    for day in ("2026-11-28", "2026-11-29"):
        board.post(f"report-{day}", "reports", {"day": day}, priority="low")
    server = ServeProcess(url, "--admin-token", TOKEN, "--label", "staging · sqlite board")
    conductors = Conductors()
    gate = tmp_path / "gate"
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        # Given a board with waiting jobs, the dashboard lists them.
        page.goto(server.url + "/")
        page.wait_for_selector(f'#waiting tr[data-job="{first.id}"]', timeout=UI_WAIT_MS)
        page.wait_for_selector('#status[data-state="live"]', timeout=UI_WAIT_MS)
        assert page.inner_text("#board-label") == "staging · sqlite board"
        assert page.inner_text('#flows tr[data-flow="reports"] td[data-col="waiting"]') == "2"
        page.evaluate("window.__sameDocument = true")

        # When a producer posts a job, the open page shows it without reloading.
        second = producer.post("resize-102", "steps", {"spec": spec})
        page.wait_for_selector(f'#waiting tr[data-job="{second.id}"]', timeout=UI_WAIT_MS)
        page.wait_for_selector(f'#events li[data-job="{second.id}"]', timeout=UI_WAIT_MS)

        # A job taken over: a conductor ran its first step, then went away.
        taken = producer.post("resize-103", "steps", {"spec": spec, "api": {"token": SECRET}})
        old = unique_owner("c-old")
        claim = producer.claim(taken, old)
        producer.save_progress(
            taken, old, claim.token, "one", step_record("one", "c-old", old, claim.token,
                                                        time.time())
        )  # fmt: skip
        producer.abandon(taken, old, claim.token, reason="c-old stopped")
        failing = producer.post("resize-104", "steps", {"spec": {"fail_at": "two"}})
        blocked = producer.post(
            "ingest-7", "steps", {"spec": {"block_at": "two", "gate": str(gate), "block_limit": 60}}
        )

        # When conductors run the jobs, they complete on the page, still without a reload.
        conductors.start(sqlite_board_factory(), "c-east")
        conductors.start(sqlite_board_factory(), "c-west")
        for job in (first, second, taken):
            page.wait_for_selector(
                f'#recent tr[data-job="{job.id}"] .state-complete', timeout=UI_WAIT_MS
            )
        page.wait_for_selector(f'#recent tr[data-job="{failing.id}"] .state-failed',
                               timeout=UI_WAIT_MS)  # fmt: skip
        page.wait_for_selector(f'#claims tr[data-job="{blocked.id}"]', timeout=UI_WAIT_MS)
        page.wait_for_selector("#conductors tr[data-conductor] .badge.live", timeout=UI_WAIT_MS)
        page.wait_for_function(
            "document.querySelector('[data-testid=total-complete] .tile-value').textContent === '3'",
            timeout=UI_WAIT_MS,
        )
        assert page.evaluate("window.__sameDocument") is True  # never reloaded
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        images.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(images / "dashboard.png"), full_page=True)

        # The job page of the taken-over job draws its three tasks, two attempts, two conductors.
        page.goto(f"{server.url}/jobs/{taken.id}")
        page.wait_for_selector("#timeline svg.gantt g.bar", timeout=UI_WAIT_MS)
        bars = page.eval_on_selector_all(
            "#timeline g.bar",
            "els => els.map(e => [e.dataset.task, e.dataset.attempt, e.dataset.conductor])",
        )
        assert [b[0] for b in bars] == ["one", "two", "three"]
        assert [b[1] for b in bars] == ["1", "2", "2"]
        assert bars[0][2] == "c-old" and bars[1][2] in ("c-east", "c-west")
        assert page.locator("#legend .swatch").count() == 2
        store = page.inner_text("#store")
        assert "••••••" in store and SECRET not in page.content()
        assert page.inner_text("#job-state") == "complete"
        page.screenshot(path=str(images / "job.png"), full_page=True)

        # The running job's page shows its claim, and the admin actions.
        page.goto(f"{server.url}/jobs/{blocked.id}")
        page.wait_for_selector("#timeline svg.gantt g.bar", timeout=UI_WAIT_MS)
        assert page.inner_text("#job-state") == "running"
        page.wait_for_selector("#timeline g.bar-running", timeout=UI_WAIT_MS)
        assert page.is_visible('#actions button[data-action="cancel"]')
        page.screenshot(path=str(images / "job-running.png"), full_page=True)

        # An operator with the admin token cancels it; the page follows it to its end.
        page.on("dialog", lambda d: d.accept(TOKEN) if d.type == "prompt" else d.accept())
        page.click("#mode button")
        assert page.inner_text("#mode button") == "admin: token set"
        page.click('#actions button[data-action="cancel"]')
        page.wait_for_selector("#action-result.ok", timeout=UI_WAIT_MS)
        assert "conductor will stop it" in page.inner_text("#action-result")
        assert board.get(blocked).cancel_requested
        # Once its conductor has seen the cancel, the blocked task may return: the job stops.
        wait_until(lambda: conductors.cancel_seen(blocked.id), timeout=30, message="cancel seen")
        gate.touch()
        page.wait_for_selector("#job-state .state-cancelled", timeout=UI_WAIT_MS)
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert problems == [], f"errors in the page: {problems}"
    finally:
        gate.touch()
        page.close()
        conductors.stop()
        server.stop()
