"""The ``jobboard`` command itself: one-line errors with named exit codes, the
board option, ``python -m jobboard``, help with examples, prefixes."""

from __future__ import annotations

import json
import uuid

import jobboard
from jobboard.admin.cli import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    build_parser,
    main,
)
from jobboard.memory import MemoryBoard
from tests.admin.helpers import assert_one_line_error, jb, populate
from tests.servers import free_port


def test_errors_are_one_line_with_their_exit_codes(real_board, tmp_path):
    url, board = real_board
    populate(board)

    no_board = jb(None, "list")
    bad_url = jb("not-a-url", "list")
    unknown_scheme = jb("gopher://x", "list")
    unknown_job = jb(url, "show", "0" * 32)
    if url.startswith("sqlite"):
        unreachable = jb(f"sqlite://{tmp_path}/missing/dir/board.db", "list")
    else:
        unreachable = jb(f"redis://127.0.0.1:{free_port()}/0?retry_deadline=0.5", "list")
    bad_option = jb(url, "list", "--limit", "-1")

    assert_one_line_error(no_board, EXIT_USAGE, "CONDUCTOR_BOARD")
    assert_one_line_error(bad_url, EXIT_USAGE, "not-a-url")
    assert_one_line_error(unknown_scheme, EXIT_USAGE, "gopher")
    assert_one_line_error(unknown_job, EXIT_REFUSED, "0" * 32)
    assert_one_line_error(unreachable, EXIT_UNAVAILABLE, "unreachable")
    assert bad_option.returncode == EXIT_USAGE and "Traceback" not in bad_option.stderr


def test_board_option_after_the_subcommand_and_module_entry_point(real_board):
    url, board = real_board
    job = board.post("one", "images")

    done = jb(None, "list", "--board", url, "--json")
    helped = jb(None, "--help")

    assert done.returncode == EXIT_OK and json.loads(done.stdout)["jobs"][0]["id"] == job.id
    assert helped.returncode == EXIT_OK and "examples:" in helped.stdout


def test_every_subcommand_help_shows_examples(capsys):
    subcommands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001

    for name in subcommands:
        assert main([name, "--help"]) == EXIT_OK
        out = capsys.readouterr().out
        assert "examples:" in out and f"jobboard {name}" in out, name
    assert main(["--help"]) == EXIT_OK
    assert "exit codes:" in capsys.readouterr().out
    assert set(subcommands) == {
        "list", "show", "claims", "conductors", "watch", "post", "abandon", "trash", "cancel",
        "retry", "purge", "pause", "resume", "export", "stats", "serve", "metrics", "schedule",
    }  # fmt: skip


def test_ambiguous_prefix_is_a_usage_error(capsys):
    name = f"amb{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(f"memory://{name}")
    try:
        seen: dict[str, str] = {}
        prefix = None
        for _ in range(5000):  # ~65k four-hex-digit prefixes: a repeat comes within a few hundred
            job = board.post("j", "f")
            if job.id[:4] in seen:
                prefix = job.id[:4]
                break
            seen[job.id[:4]] = job.id
        assert prefix is not None

        code = main(["--board", f"memory://{name}", "show", prefix])

        assert code == EXIT_USAGE and "ambiguous" in capsys.readouterr().err
    finally:
        board.close()
        MemoryBoard.reset(name)
