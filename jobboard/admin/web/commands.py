"""``jobboard serve`` and ``jobboard metrics``: their options and what they run.

The ``jobboard`` parser registers these commands from :data:`COMMANDS` and
:func:`add_arguments`; a command runs on the board the admin tool opened and
never closes it. Starlette and uvicorn (the ``web`` extra) and
prometheus_client (the ``metrics`` extra) are imported only when a command
runs, so the rest of the admin tool works without them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from jobboard.base import JobBoard, redact_url

__all__ = ["COMMANDS", "ENV_ADMIN_TOKEN", "add_arguments", "cmd_metrics", "cmd_serve"]

log = logging.getLogger(__name__)

#: Environment variable holding the admin token when ``--admin-token`` is not given.
ENV_ADMIN_TOKEN = "CONDUCTOR_ADMIN_TOKEN"
#: Shortest admin token accepted.
MIN_TOKEN = 16
#: Exit codes, as the ``jobboard`` command defines them.
EXIT_OK, EXIT_USAGE = 0, 2


def _seconds(text: str) -> float:
    """A positive number of seconds (``2``, ``0.5``)."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0 to 3600 seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    """A TCP port number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, got {value}")
    return value


def _fail(message: str) -> int:
    sys.stderr.write(f"jobboard: error: {message}\n")
    return EXIT_USAGE


def _label(args: argparse.Namespace) -> str:
    """The board's name on pages and in logs: ``--label``, else its URL without password."""
    return getattr(args, "label", None) or redact_url(getattr(args, "board_url", "") or "")


def cmd_serve(board: JobBoard, args: argparse.Namespace) -> int:
    """``serve``: run the dashboard until SIGINT or SIGTERM."""
    token = args.admin_token or os.environ.get(ENV_ADMIN_TOKEN) or None
    if token is not None and len(token) < MIN_TOKEN:
        return _fail(f"the admin token must have at least {MIN_TOKEN} characters")
    try:
        from jobboard.admin.web.app import create_app
        from jobboard.admin.web.server import make_server
        from jobboard.admin.web.snapshot import BoardReader
    except ImportError as err:
        return _fail(f"jobboard serve needs the web extra (pip install 'conductor[web]'): {err}")
    label = _label(args)
    reader = BoardReader(board, label=label, stale_after=args.stale_after)
    app = create_app(board, label=label, admin_token=token, refresh=args.refresh, reader=reader)
    mode = "admin actions on" if token else "read-only"
    sys.stderr.write(f"jobboard: dashboard on http://{args.host}:{args.port}/ ({mode})\n")
    level = "debug" if getattr(args, "verbose", False) else "warning"
    server = make_server(app, args.host, args.port, log_level=level)
    # uvicorn handles SIGINT/SIGTERM, then raises the signal again for the handler
    # that was there before: with these, a stop asked by a signal ends with 0.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def cmd_metrics(board: JobBoard, args: argparse.Namespace) -> int:
    """``metrics``: serve only the board gauges on ``/metrics`` until SIGINT or SIGTERM."""
    try:
        from jobboard.admin.web.metrics import serve_metrics
        from jobboard.admin.web.snapshot import BoardReader
    except ImportError as err:
        return _fail(f"jobboard metrics needs the metrics extra (prometheus_client): {err}")
    reader = BoardReader(board, label=_label(args), stale_after=args.stale_after)
    sys.stderr.write(f"jobboard: board metrics on http://{args.host}:{args.port}/metrics\n")
    return serve_metrics(reader, args.port, args.host)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Add the options of command ``name`` to its subparser."""
    default_port = 8080 if name == "serve" else 9108
    parser.add_argument(
        "--port", type=_port, default=default_port, help=f"TCP port (default {default_port})"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this host only)",
    )
    parser.add_argument(
        "--stale-after",
        type=_seconds,
        default=15.0,
        metavar="SECONDS",
        help="conductors silent this long are stale (default 15)",
    )
    if name != "serve":
        return
    parser.add_argument(
        "--admin-token",
        default=None,
        metavar="TOKEN",
        help=f"allow cancel, retry and trash to requests bearing this token "
        f"(default ${ENV_ADMIN_TOKEN}; none: read-only)",
    )
    parser.add_argument(
        "--label",
        default=None,
        metavar="TEXT",
        help="board name shown in the page header (default: its URL without password)",
    )
    parser.add_argument(
        "--refresh",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="re-read the board at least this often for changes no event announced (default 2)",
    )


#: name -> (command, one-line help, examples), as the ``jobboard`` parser lists commands.
COMMANDS = {
    "serve": (
        cmd_serve,
        "web dashboard: flows, conductors, claims, jobs; JSON API and /metrics",
        "jobboard serve --port 8080\n"
        f"  {ENV_ADMIN_TOKEN}=$(cat /etc/conductor/admin-token) jobboard serve --host 0.0.0.0",
    ),
    "metrics": (
        cmd_metrics,
        "export per-flow board gauges (backlog, conductors) for Prometheus",
        "jobboard metrics --port 9108",
    ),
}
