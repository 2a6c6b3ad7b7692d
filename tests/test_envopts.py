"""Options from ``CONDUCTOR_*`` / ``JOBBOARD_*`` variables, ``--board-file``, ``--version``, ``--path``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from conductor import cli as conductor_cli
from conductor import options
from jobboard import BadURL, envopts
from jobboard.admin import cli as jobboard_cli
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-pa55"


@pytest.fixture(autouse=True)
def no_inherited_variables(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("CONDUCTOR_", "JOBBOARD_")):
            monkeypatch.delenv(key)


def run_args(*argv: str) -> argparse.Namespace:
    return conductor_cli.build_parser().parse_args(["run", *argv])


def every_option(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in envopts._options(parser)
        if any(s.startswith("--") for s in a.option_strings) and a.default is not argparse.SUPPRESS
    ]


def test_every_option_of_both_commands_names_its_variable_in_the_help():
    run = next(
        a
        for a in conductor_cli.build_parser()._actions
        if isinstance(a, argparse._SubParsersAction)
    ).choices["run"]
    for parser, prefix in ((run, "CONDUCTOR"), (jobboard_cli.build_parser(), "JOBBOARD")):
        actions = every_option(parser)
        assert len(actions) > 10
        for action in actions:
            long = next(s for s in action.option_strings if s.startswith("--"))
            assert f"[env {envopts.env_name(prefix, long)}]" in action.help, long


def test_help_documents_the_metrics_address_and_port(capsys):
    with pytest.raises(SystemExit):
        conductor_cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--metrics-host ADDRESS" in text and "0.0.0.0 for all interfaces" in text
    assert f"{options.DEFAULT_METRICS_PORT} when PORT is omitted" in text
    assert "/livez" in text


def test_variables_set_defaults_and_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("CONDUCTOR_MAX_JOBS", "4")
    monkeypatch.setenv("CONDUCTOR_ENGINE", "parallel")
    monkeypatch.setenv("CONDUCTOR_ENTRY_POINTS", "yes")
    monkeypatch.setenv("CONDUCTOR_FLOWS", "a.flows, b.flows")
    monkeypatch.setenv("CONDUCTOR_METRICS_PORT", "9999")
    args = run_args()
    assert (args.max_jobs, args.engine, args.entry_points) == (4, "parallel", True)
    assert args.flows == ["a.flows", "b.flows"] and args.metrics_port == 9999
    args = run_args("--max-jobs", "2", "--flows", "c.flows")
    assert args.max_jobs == 2
    assert args.flows == ["c.flows"]  # the command line replaces the list, never appends to it


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("CONDUCTOR_MAX_JOBS", "0", "CONDUCTOR_MAX_JOBS='0': must be >= 1"),
        ("CONDUCTOR_ENGINE", "turbo", "CONDUCTOR_ENGINE='turbo': invalid choice 'turbo'"),
        ("CONDUCTOR_ENTRY_POINTS", "maybe", "CONDUCTOR_ENTRY_POINTS='maybe': expected one of"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(monkeypatch, capsys, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        run_args("--board", "memory://x")
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_value_is_ignored_when_the_command_line_gives_the_option(monkeypatch):
    monkeypatch.setenv("CONDUCTOR_MAX_JOBS", "lots")
    assert run_args("--max-jobs", "3").max_jobs == 3


def test_help_works_with_a_bad_variable(monkeypatch):
    monkeypatch.setenv("CONDUCTOR_MAX_JOBS", "lots")
    with pytest.raises(SystemExit) as info:
        run_args("--help")
    assert info.value.code == 0


def test_jobboard_reads_its_own_variables_and_required_options_from_them(monkeypatch, tmp_path):
    monkeypatch.setenv("JOBBOARD_FLOW", "billing")
    monkeypatch.setenv("JOBBOARD_LIMIT", "7")
    monkeypatch.setenv("JOBBOARD_JSON", "1")
    parser = jobboard_cli.build_parser()
    listed = parser.parse_args(["list"])
    assert (listed.flow, listed.limit, listed.json) == ("billing", 7, True)
    posted = parser.parse_args(["post", "nightly"])  # --flow is required, given by the variable
    assert posted.flow == "billing"


def test_board_url_order_and_conflicts(tmp_path):
    url_file = tmp_path / "board-url"
    url_file.write_text(f"\n  redis://app:{SECRET}@127.0.0.1:6379/0  \n")
    ns = argparse.Namespace
    assert envopts.board_url(ns(board="memory://a", board_file=None), ["X"], {}) == "memory://a"
    from_file = envopts.board_url(ns(board=None, board_file=str(url_file)), ["X"], {})
    assert from_file == f"redis://app:{SECRET}@127.0.0.1:6379/0"
    env = {"J_BOARD_FILE": str(url_file), "C_BOARD": "memory://c"}
    assert envopts.board_url(ns(board=None, board_file=None), ["J", "C"], env) == from_file
    assert envopts.board_url(ns(board=None, board_file=None), ["C"], env) == "memory://c"
    assert envopts.board_url(ns(board=None, board_file=None), ["Z"], env) is None
    with pytest.raises(BadURL, match="not both"):
        envopts.board_url(ns(board="memory://a", board_file=str(url_file)), ["J"], {})
    with pytest.raises(BadURL, match="C_BOARD or C_BOARD_FILE"):
        envopts.board_url(ns(), ["C"], {"C_BOARD": "memory://c", "C_BOARD_FILE": "/x"})


def test_unreadable_or_empty_board_files_are_refused(tmp_path):
    (tmp_path / "empty").write_text("\n \n")
    with pytest.raises(BadURL, match="is empty"):
        envopts.read_board_file(str(tmp_path / "empty"))
    with pytest.raises(BadURL, match="cannot read the board URL from .*missing"):
        envopts.read_board_file(str(tmp_path / "missing"))


def test_conductor_run_with_a_board_file_never_prints_the_password(tmp_path):
    url_file = tmp_path / "board-url"
    url_file.write_text(f"redis://app:{SECRET}@127.0.0.1:{free_port()}/0\n")
    done = subprocess.run(
        [sys.executable, "-m", "conductor", "run", "--flows", "tests.flows_for_tests",
         "--connect-timeout", "1", "--log-level", "DEBUG"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
             "CONDUCTOR_BOARD_FILE": str(url_file)},
    )  # fmt: skip
    assert done.returncode == conductor_cli.EXIT_UNREACHABLE, done.stderr
    assert "unreachable" in done.stderr
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "url",
    [
        f"zookeeper://user:{SECRET}@127.0.0.1:1/x?lease=abc",
        f"redis://127.0.0.1:1/0?password={SECRET}&bogus=1",
        f"zookeeper://127.0.0.1:1/x?digest=ops:{SECRET}&lease=abc",
    ],
)
@pytest.mark.parametrize("command", ["conductor", "jobboard"])
def test_bad_urls_from_a_file_are_refused_without_their_secret(tmp_path, url, command):
    url_file = tmp_path / "board-url"
    url_file.write_text(url + "\n")
    args = ["run", "--flows", "tests.flows_for_tests"] if command == "conductor" else ["list"]
    done = subprocess.run(
        [sys.executable, "-m", command, *args, "--board-file", str(url_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "error" in done.stderr and "***" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_scrub_hides_every_secret_of_the_url():
    url = f"redis://app:{SECRET}@h:1/0?password=other-{SECRET}&digest=u:dig3st&namespace=n"
    text = f"failed: {url} / {SECRET} / other-{SECRET} / dig3st / namespace=n"
    scrubbed = envopts.scrub(text, url)
    assert SECRET not in scrubbed and "dig3st" not in scrubbed
    assert "namespace=n" in scrubbed
    assert envopts.scrub("as is", None) == "as is"


def test_jobboard_uses_a_board_file_from_its_variable(tmp_path):
    url_file = tmp_path / "board-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'board.db'}\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "JOBBOARD_BOARD_FILE": str(url_file)}
    posted = subprocess.run(
        [sys.executable, "-m", "jobboard", "post", "hello", "--flow", "noop"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert posted.returncode == 0, posted.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "jobboard", "list", "--board-file", str(url_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**env, "JOBBOARD_BOARD_FILE": ""},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout


@pytest.mark.parametrize("command", ["conductor", "jobboard"])
def test_version(command):
    done = subprocess.run(
        [sys.executable, "-m", command, "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.strip() == f"{command} {envopts.package_version()}"
    assert envopts.package_version() != "unknown"


def test_path_goes_first_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    one, two = tmp_path / "one", tmp_path / "two"
    added = options.use_path(f"{one}:{two}")
    assert added == [str(one), str(two)] and sys.path[:2] == added
    assert run_args().path == "."
