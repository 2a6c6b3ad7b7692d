"""The systemd unit passes ``systemd-analyze verify`` and stops after the drain, not during it."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

from tests.deploy.kit import (
    DEPLOY,
    conductor_variables,
    known_variables,
    run_options,
    seconds,
    stop_budget,
    tool,
)

UNIT = DEPLOY / "systemd" / "conductor@.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "conductor.env.example"
INSTALLED = "/opt/conductor/bin/conductor"


def service_section() -> dict[str, list[str]]:
    """``[Service]`` keys with every value (keys like ``Environment=`` repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def unit_environ() -> dict[str, str]:
    """What the unit sets, then the example environment file (which systemd applies last)."""
    env = dict(v.split("=", 1) for v in service_section()["Environment"])
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + ENV_EXAMPLE.read_text())
    env.update(parser["env"])
    return env


def verify(unit: Path) -> subprocess.CompletedProcess:
    analyze = tool("systemd-analyze", "deploy/install-system-deps.sh installs systemd")
    return subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, cwd=unit.parent,
    )  # fmt: skip


def installed_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as an instance, with ExecStart pointing at this machine's ``conductor``
    (verify checks that the binary exists)."""
    here = tool("conductor", "the project's console script")
    unit = tmp_path / "conductor@test.service"
    unit.write_text((text or UNIT.read_text()).replace(INSTALLED, here))
    return unit


def test_the_unit_verifies_cleanly(tmp_path):
    done = verify(installed_copy(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == done.stderr.strip() == "", done.stderr


def test_verify_would_catch_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes")
    done = verify(installed_copy(tmp_path, broken))
    assert "restart" in done.stderr.lower()


def test_stop_timeout_is_above_the_drain_and_failures_restart():
    service = service_section()
    assert service["ExecStart"] == [f"{INSTALLED} run"]
    options = run_options([], unit_environ())
    assert seconds(service["TimeoutStopSec"][0]) > stop_budget(options)
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["EnvironmentFile"] == ["/etc/conductor/%i.env"]


def test_the_board_url_is_a_credential_file_and_variables_are_real_options():
    service = service_section()
    (credential,) = service["LoadCredential"]
    name = credential.split(":", 1)[0]
    env = unit_environ()
    assert env["CONDUCTOR_BOARD_FILE"] == f"%d/{name}"
    assert "CONDUCTOR_BOARD" not in env
    unknown = set(conductor_variables(env)) - known_variables()
    assert not unknown


def test_bad_usage_is_not_restarted_forever():
    from conductor.cli import EXIT_USAGE

    assert service_section()["RestartPreventExitStatus"] == [str(EXIT_USAGE)]
