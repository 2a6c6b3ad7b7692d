"""The README's admin-tool producer lines (post --wait, --key/--delay, schedules), verbatim."""

from __future__ import annotations

import json
import shlex
import subprocess

import jobboard
from jobboard import JobState
from tests.test_first_run import clean_env, readme_blocks, script


def test_readme_producer_shell_lines_run_on_sqlite(tmp_path):
    blocks = readme_blocks()
    (tmp_path / "flows.py").write_text(blocks[0][1])
    lang, shell = blocks[4]
    assert lang == "sh" and "--wait" in shell and "schedule add" in shell
    url = f"sqlite:///{tmp_path / 'board.db'}"
    env = {**clean_env(tmp_path), "CONDUCTOR_BOARD": url}
    conductor = subprocess.Popen(
        [script("conductor"), "run", "--flows", "flows", "--name", "readme"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        outputs = []
        for line in shell.strip().splitlines():
            words = shlex.split(line)
            done = subprocess.run([script(words[0]), *words[1:]], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=90)
            assert done.returncode == 0, (line, done.stderr)
            outputs.append(done.stdout)
        assert json.loads(outputs[0]) == {"thumbnail": "/b.png@64"}
        board = jobboard.connect(url)
        try:
            later = board.get(outputs[1].strip())
            assert later.state is JobState.SCHEDULED and later.key == "c64"
        finally:
            board.close()
        assert "thumbs" in outputs[3] and "no live conductor" not in outputs[3]
    finally:
        conductor.terminate()
        conductor.wait(30)
