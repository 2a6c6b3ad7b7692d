"""A newcomer's first run: the README's "Using it" example, verbatim, in real processes.

The README's code blocks are read from the file itself, so the example and
this test cannot drift apart: ``flows.py`` is written as printed, the shell
lines run as printed (the installed ``conductor`` and ``jobboard`` scripts,
which do not put the current folder on ``sys.path`` themselves: ``--path``
does), and the job must complete.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import jobboard
from jobboard import JobState
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block in the README's "Using it" section."""
    text = README.read_text()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def script(name: str) -> str:
    """The installed console script ``name`` (next to this Python, or on PATH)."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    on_path = os.popen(f"command -v {shlex.quote(name)}").read().strip()
    if not on_path:
        pytest.fail(f"the {name!r} console script is not installed (pip install -e .)")
    return on_path


def clean_env(workdir: Path) -> dict[str, str]:
    """The environment a newcomer has: this tree importable, nothing else set for us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "JOBBOARD_"))}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, never the work folder
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(workdir)
    return env


def finished_job(url: str, job_id: str) -> jobboard.Job:
    """The job once it has finished (bounded wait)."""
    board = jobboard.connect(url)
    try:
        return wait_until(
            lambda: (job := board.get(job_id)).state.finished and job,
            timeout=60,
            message=f"job {job_id} to finish",
        )
    finally:
        board.close()


def test_readme_example_runs_verbatim_on_sqlite(tmp_path):
    blocks = readme_blocks()
    (lang, flows_code), (shell_lang, shell) = blocks[0], blocks[1]
    assert (lang, shell_lang) == ("python", "sh")
    (tmp_path / "flows.py").write_text(flows_code)
    env = clean_env(tmp_path)
    conductor_proc: subprocess.Popen | None = None
    outputs: list[str] = []
    log = open(tmp_path / "conductor.log", "wb")
    try:
        for line in shell.strip().splitlines():
            words = shlex.split(line)
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                env[key] = value
                continue
            background = words[-1] == "&"
            words = [script(words[0]), *[w for w in words[1:] if w != "&"]]
            if background:
                conductor_proc = subprocess.Popen(
                    words, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                continue
            done = subprocess.run(
                words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
            if words[1] == "post":
                # Then: the conductor started in the background completes the job.
                job = finished_job(f"sqlite:///{tmp_path / 'board.db'}", done.stdout.strip())
                assert job.state is JobState.COMPLETE, job.last_error
                assert job.result["thumbnail"] == "/a.png@128"
        assert conductor_proc is not None, "the README starts no conductor"
        assert "thumb-1" in outputs[-1]  # `jobboard list --state complete` shows it
        conductor_proc.send_signal(signal.SIGTERM)
        assert conductor_proc.wait(30) == 0
    finally:
        if conductor_proc is not None and conductor_proc.poll() is None:
            conductor_proc.kill()
            conductor_proc.wait(10)
        log.close()
        if conductor_proc is not None and conductor_proc.returncode not in (0, None):
            print((tmp_path / "conductor.log").read_text(errors="replace")[-4000:])


@pytest.mark.redis
def test_readme_in_process_example_completes_the_job_on_redis(tmp_path, redis_url):
    blocks = readme_blocks()
    (tmp_path / "flows.py").write_text(blocks[0][1])
    lang, code = blocks[2]
    assert lang == "python" and "redis://127.0.0.1:6379/0" in code
    base = redis_url.split("?", 1)[0]
    namespace = f"readme{os.getpid()}"
    code = code.replace(
        "redis://127.0.0.1:6379/0?namespace=images", f"{base}?namespace={namespace}"
    )
    (tmp_path / "app.py").write_text(code)
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    board = jobboard.connect(f"{base}?namespace={namespace}")
    try:
        job = wait_until(
            lambda: next(iter(board.iterjobs(states=jobboard.FINISHED_STATES)), None),
            timeout=60,
            message="the in-process example's job to finish",
        )
        assert job.name == "thumb-1" and job.state is JobState.COMPLETE
        assert job.result["thumbnail"] == "/a.png@128"
    finally:
        board.close()
        proc.kill()
        out = proc.communicate(timeout=10)[0]
    assert b"Traceback" not in out, out.decode(errors="replace")


def test_the_getting_started_page_shows_the_same_example():
    page = (ROOT / "docs" / "getting-started.md").read_text()
    pages_blocks = re.findall(r"```(\w+)\n(.*?)```", page, flags=re.S)
    for block in readme_blocks():
        assert block in pages_blocks, block[1][:60]
