"""``conductor run`` refuses bad set-ups with clear messages and exit codes; the fencing example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conductor.cli import EXIT_UNREACHABLE, EXIT_USAGE, main
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conductor", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env=env,
    )


def test_help_shows_examples():
    done = run_cli("run", "--help")
    assert done.returncode == 0
    assert "examples:" in done.stdout and "--metrics-port" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--board", "nosuch://x", "--flows", "tests.flows_for_tests"], "unknown board scheme"),
        (["--board", "memory://x"], "no flows"),
        (["--flows", "tests.flows_for_tests"], "no board"),
        (["--board", "memory://x", "--flows", "no.such.module"], "cannot import flows module"),
        (["--board", "memory://x", "--flows", "json"], "registers no flows"),
        (["--board", "sqlite:///tmp/x.db?lease=abc", "--flows", "tests.flows_for_tests"], "lease"),
    ],
)
def test_bad_setups_exit_2_with_a_clear_message(args, message, monkeypatch, capsys):
    monkeypatch.delenv("CONDUCTOR_BOARD", raising=False)
    assert main(["run", *args, "--log-level", "ERROR"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unreachable_board_exits_3_after_retrying():
    port = free_port()  # nothing listens there
    done = run_cli(
        "run", "--board", f"redis://127.0.0.1:{port}/0", "--flows", "tests.flows_for_tests",
        "--connect-timeout", "1", "--log-level", "ERROR",
    )
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert "unreachable" in done.stderr
    assert "Traceback" not in done.stderr


def test_fencing_example_rejects_a_stale_token():
    from conductor import engines
    from conductor.examples import fencing

    ledger = fencing.LEDGER
    for token in (1, 2):
        engines.run(fencing.credit_flow(), store={"account": "a", "amount": 5},
                    context={"fencing_token": token})
    assert ledger.balances["a"] == 10
    with pytest.raises(Exception) as info:
        engines.run(fencing.credit_flow(), store={"account": "a", "amount": 5},
                    context={"fencing_token": 1})
    assert "token 1 < 2" in str(info.value)
    assert ledger.balances["a"] == 10


@pytest.mark.parametrize(
    "option, value",
    [
        ("--lease", "1e308"),
        ("--lease", "inf"),
        ("--lease", "nan"),
        ("--lease", "-1"),
        ("--lease", "0"),
        ("--drain-timeout", "inf"),
        ("--stop-timeout", "-0.5"),
        ("--connect-timeout", "abc"),
        ("--metrics-port", "70000"),
    ],
)
def test_out_of_range_seconds_are_refused_at_the_door_naming_the_option(option, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--board", "memory://x", "--flows", "tests.flows_for_tests", option, value])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {option}" in err
    assert "Traceback" not in err


def test_a_flows_module_that_raises_at_import_exits_2_in_one_line():
    done = run_cli("run", "--board", "memory://x", "--flows", "tests.flows_broken")
    assert done.returncode == EXIT_USAGE
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "tests.flows_broken" in lines[0]
    assert "RuntimeError: flows module broken on purpose" in lines[0]
    # The traceback is there for whoever asks for debug logs.
    debug = run_cli(
        "run", "--board", "memory://x", "--flows", "tests.flows_broken", "--log-level", "DEBUG"
    )
    assert debug.returncode == EXIT_USAGE
    assert "Traceback" in debug.stderr and 'raise RuntimeError("flows module broken' in debug.stderr
