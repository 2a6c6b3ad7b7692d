"""The ``conductor`` command: ``conductor run`` (the daemon) and ``conductor demo``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from conductor import options
from conductor.logfields import JobFieldsFilter
from conductor.options import DEFAULT_METRICS_PORT
from jobboard import envopts

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

#: Longest claim lease ``conductor run --lease`` accepts, in seconds (one hour).
MAX_LEASE = 3600.0
#: Longest drain, stop or connect timeout accepted, in seconds (one day).
MAX_TIMEOUT = 86400.0

EPILOG = """\
examples:
  conductor run --board redis://127.0.0.1:6379/0 --flows myapp.flows --max-jobs 4
  CONDUCTOR_BOARD=sqlite:///var/lib/conductor/board.db conductor run --flows myapp.flows
  conductor run --board-file /run/secrets/board-url --flows flows --path /srv/app
  conductor run --board zookeeper://zk1:2181,zk2:2181/conductor --flows myapp.flows \\
      --engine parallel --metrics-port 9464 --log-format json
  conductor demo                      # three conductors on a SQLite board, one killed
  conductor demo --board redis://127.0.0.1:6379/0

every option of `conductor run` also comes from CONDUCTOR_<OPTION> (e.g. CONDUCTOR_MAX_JOBS=4);
the command line wins.

exit codes: 0 ok, 1 failure (e.g. the heartbeat died), 2 bad usage (bad URL or option,
  no flows, a flows module that fails to import), 3 board unreachable
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``conductor`` command."""
    parser = argparse.ArgumentParser(
        prog="conductor",
        description="Run conductor daemons that claim jobs from a job board and run their flows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    envopts.add_version(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a conductor daemon",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--board",
        default=None,
        metavar="URL",
        help="board URL",
    )
    run.add_argument(
        "--flows",
        action="append",
        default=[],
        metavar="MODULE",
        help="module registering flows (repeatable)",
    )
    run.add_argument(
        "--entry-points",
        action="store_true",
        help="also load flows installed under the 'conductor.flows' entry point group",
    )
    run.add_argument("--name", default=None, help="conductor name (default: host-pid)")
    run.add_argument(
        "--max-jobs", type=_positive_int, default=1, help="jobs run at the same time (default 1)"
    )
    run.add_argument("--engine", choices=("serial", "parallel"), default="serial")
    run.add_argument(
        "--lease",
        type=_seconds(MAX_LEASE),
        default=None,
        help=f"claim lease in seconds, at most {MAX_LEASE:g} (default: the board's)",
    )
    run.add_argument(
        "--drain-timeout",
        type=_seconds(MAX_TIMEOUT),
        default=30.0,
        help="seconds running jobs get to finish on SIGTERM (default 30)",
    )
    run.add_argument(
        "--stop-timeout",
        type=_seconds(MAX_TIMEOUT, allow_zero=True),
        default=10.0,
        help="after the drain, seconds a task gets to stop before its job is abandoned and "
        "the conductor exits without it (default 10)",
    )
    run.add_argument(
        "--connect-timeout",
        type=_seconds(MAX_TIMEOUT),
        default=15.0,
        help="seconds to keep retrying an unreachable board (default 15)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        nargs="?",
        const=DEFAULT_METRICS_PORT,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics, /healthz (ready) and /livez (alive) on this port "
        f"({DEFAULT_METRICS_PORT} when PORT is omitted; 0: any free port; default: off)",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the metrics server binds (default 127.0.0.1; 0.0.0.0 for all "
        "interfaces, as in a container)",
    )
    _logging_args(run)
    options.add_run_options(run)
    envopts.from_environment(run, options.ENV_PREFIX)

    demo = sub.add_parser("demo", help="run the demo: conductors sharing a board, one killed")
    demo.add_argument(
        "--board",
        default=None,
        help="board URL (default: a new SQLite board in a temporary directory)",
    )
    demo.add_argument("--jobs", type=_positive_int, default=30)
    demo.add_argument("--conductors", type=_positive_int, default=3)
    demo.add_argument("--lease", type=_seconds(MAX_LEASE), default=2.0)
    demo.add_argument("--task-seconds", type=_seconds(MAX_TIMEOUT), default=0.15)
    demo.add_argument("--timeout", type=_seconds(MAX_TIMEOUT), default=180.0)
    _logging_args(demo, default_level="WARNING")
    return parser


def _logging_args(parser: argparse.ArgumentParser, default_level: str = "INFO") -> None:
    parser.add_argument(
        "--log-level", default=default_level, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {text[:40]!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, got {value}")
    return value


def _seconds(limit: float, *, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds in (0, limit] (or [0, limit])."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text[:40]!r}") from None
        low_ok = value >= 0 if allow_zero else value > 0
        if not (math.isfinite(value) and low_ok and value <= limit):
            low = "0 <=" if allow_zero else "0 <"
            raise argparse.ArgumentTypeError(
                f"must be {low} seconds <= {limit:g}, got {text[:40]}"
            )
        return value

    return parse


def _iso(created: float) -> str:
    """A record's time as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:03.250Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, with the job fields when a record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "flow", "conductor", "event"):
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(level: str, fmt: str) -> None:
    """Configure the root logger (only the daemon does this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobFieldsFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _error(message: str) -> None:
    print(f"conductor: error: {message}", file=sys.stderr)


def connect_board(url: str, timeout: float) -> Any:
    """Connect to the board, retrying an unreachable one until ``timeout``: waits of
    0.2 s doubling up to 2 s, each with up to 0.2 s of jitter, the last one cut
    to the deadline (a plain loop: a retry library costs ~10 ms of start-up)."""
    import random

    import jobboard

    deadline = time.monotonic() + timeout
    wait = 0.2
    while True:
        try:
            return jobboard.connect(url)
        except jobboard.BoardUnavailable:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            time.sleep(min(left, wait + random.uniform(0.0, 0.2)))
            wait = min(2.0 * wait, 2.0)


def cmd_run(args: argparse.Namespace) -> int:
    """``conductor run``: serve flows from a board until signalled."""
    import jobboard
    from conductor.conductor import Conductor
    from conductor.registry import FlowRegistry, RegistryError

    configure_logging(args.log_level, args.log_format)
    try:
        board_url = options.board_url(args)
    except jobboard.BadURL as err:
        _error(str(err))
        return EXIT_USAGE
    if not board_url:
        _error("no board: give --board URL or --board-file PATH, or set CONDUCTOR_BOARD")
        return EXIT_USAGE
    if not args.flows and not args.entry_points:
        _error("no flows: give --flows MODULE (or --entry-points)")
        return EXIT_USAGE
    registry = FlowRegistry()
    options.use_path(args.path)
    try:
        for module in args.flows:
            registry.update(FlowRegistry.from_module(module))
        if args.entry_points:
            registry.update(FlowRegistry.from_entry_points())
    except RegistryError as err:
        _error(str(err))
        return EXIT_USAGE
    if not len(registry):
        _error("no flows registered by the given modules or entry points")
        return EXIT_USAGE
    try:
        board = connect_board(board_url, args.connect_timeout)
    except jobboard.BadURL as err:
        _error(envopts.scrub(f"bad board URL: {err}", board_url))
        return EXIT_USAGE
    except jobboard.BoardUnavailable as err:
        _error(
            envopts.scrub(f"board unreachable after {args.connect_timeout:.0f}s: {err}", board_url)
        )
        return EXIT_UNREACHABLE
    except jobboard.BoardError as err:
        _error(envopts.scrub(f"cannot open board: {err}", board_url))
        return EXIT_UNREACHABLE
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    conductor = Conductor(
        name,
        board,
        registry,
        max_simultaneous_jobs=args.max_jobs,
        engine=args.engine,
        lease=args.lease,
        drain_timeout=args.drain_timeout,
        stop_timeout=args.stop_timeout,
    )
    metrics = None
    if args.metrics_port is not None:
        from conductor.metrics import attach_metrics

        metrics = attach_metrics(conductor, args.metrics_port, args.metrics_host)

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("conductor").warning(
            "received %s: %s",
            signal.Signals(signum).name,
            "stopping now" if conductor.stopping else "draining",
        )
        conductor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        conductor.run()
    finally:
        if metrics is not None:
            metrics.stop()
        board.close()
    code = EXIT_OK
    if conductor.fatal_error is not None:
        _error(conductor.fatal_error)
        code = EXIT_FAILED
    if conductor.left_behind:
        # Tasks that ignored the stop still run on their threads; their jobs are released.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``conductor`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "demo":
        from conductor.demo import run_demo

        configure_logging(args.log_level, args.log_format)
        started = time.monotonic()
        code = run_demo(args)
        print(f"demo finished in {time.monotonic() - started:.1f}s")
        return code
    parser.print_help()
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
