"""``python -m bench``: the project's figures, on private servers it starts itself.

Sections (``--sections``): throughput (with the TaskFlow peer interleaved),
failover, lowload (idle cost, post->claim latency, herd), backlog (claim cost
and start-up with jobs waiting). Prints one JSON line per figure as it is
measured, then one table. Figures, not tests: nothing here passes or fails.

    python -m bench                       # everything (about half an hour)
    python -m bench --quick               # a bounded run (a few minutes)
    python -m bench --backends redis --k 1,4 --jobs 3000 --skip-peer --sections throughput
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import backlog, failover, lowload, peer, throughput
from bench.common import figure_line
from bench.fleet import compile_project
from bench.report import render
from bench.servers import BACKENDS, Servers

SECTIONS = ("throughput", "failover", "lowload", "backlog")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="bounded run: fewer jobs, kills, K values and sizes")
    add("--backends", default=",".join(BACKENDS), help="comma list (default: all three)")
    add("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    add("--k", type=_ints, default=None, help="conductor counts for throughput (default 1,2,4,8)")
    add("--jobs", type=int, default=None, help="jobs per throughput run (default 2000)")
    add("--peer-jobs", type=int, default=None, help="jobs per TaskFlow run (default 500)")
    add("--skip-peer", action="store_true", help="do not install or run TaskFlow")
    add("--repeat", type=int, default=1, help="throughput runs per configuration (median)")
    add("--kills", type=int, default=None, help="failover kills per backend (default 20)")
    add("--lease", type=float, default=1.0, help="lease of the failover runs (default 1 s)")
    add("--session-timeout", type=float, default=4.0, help="ZooKeeper session of failover runs")
    add(
        "--zk-tick-ms",
        type=int,
        default=100,
        help="ZooKeeper's tickTime in ms (default 100): a dead session ends on the first tick "
        "after its timeout, so failover takes up to one tick more than the session",
    )
    add("--herd-k", type=_ints, default=None, help="idle conductor counts (default 1,2,4,8,16)")
    add("--rate", type=float, default=5.0, help="arrival rate at low load, jobs/s (default 5)")
    add("--herd-jobs", type=int, default=None, help="jobs per herd run (default 40)")
    add("--latency-jobs", type=int, default=None, help="jobs of the K=1 latency run (default 100)")
    add("--idle-seconds", type=float, default=None, help="idle window (default 20 s)")
    add("--backlog", type=_ints, default=None, help="waiting jobs (default 1000,10000,100000)")
    add("--out", type=Path, default=None, help="also write the table and JSON lines here")
    return parser


def apply_defaults(args: argparse.Namespace) -> None:
    """Fill unset knobs from the full or the --quick profile."""
    quick = args.quick
    defaults: dict[str, Any] = {
        "k": [1, 2, 4] if quick else [1, 2, 4, 8],
        "jobs": 1000 if quick else 2000,
        "peer_jobs": 150 if quick else 500,
        "kills": 5 if quick else 20,
        "herd_k": [1, 4, 16] if quick else [1, 2, 4, 8, 16],
        "herd_jobs": 20 if quick else 40,
        "latency_jobs": 50 if quick else 100,
        "idle_seconds": 10.0 if quick else 20.0,
        "backlog": [1000, 10000] if quick else [1000, 10000, 100000],
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.backends = tuple(b for b in args.backends.split(",") if b)
    args.sections = tuple(s for s in args.sections.split(",") if s)
    for backend in args.backends:
        if backend not in BACKENDS:
            raise SystemExit(f"bench: unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    for section in args.sections:
        if section not in SECTIONS:
            raise SystemExit(f"bench: unknown section {section!r} (known: {', '.join(SECTIONS)})")


class Run:
    """Collects figures, printing each as one JSON line."""

    def __init__(self, out: Path | None) -> None:
        self.figures: list[dict[str, Any]] = []
        self.out = out
        self.lines: list[str] = []

    def emit(self, figure: str, fields: dict[str, Any]) -> None:
        line = figure_line(figure, **fields)
        self.figures.append(json.loads(line))
        self.lines.append(line)
        print(line, flush=True)

    def attempt(
        self, figure: str, what: dict[str, Any], measure: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """Run one measurement; a failure becomes an error figure, never the end of the run."""
        try:
            return measure(*args, **kw)
        except Exception as err:  # noqa: BLE001 - one failed figure must not stop the others
            traceback.print_exc(file=sys.stderr)
            self.emit(figure, {**what, "error": f"{type(err).__name__}: {err}"[:300]})
            return None


def machine_notes(args: argparse.Namespace, peer_version: str | None) -> list[str]:
    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    memory = cmd("free", "-h").splitlines()
    return [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"command: python -m bench {' '.join(sys.argv[1:])}".rstrip(),
        f"machine: {cmd('nproc')} cores, memory {memory[1].split()[1] if len(memory) > 1 else '?'}, "
        f"load average at start {os.getloadavg()[0]:.2f}, Python {platform.python_version()}, "
        f"{cmd('redis-server', '--version').split(' sha=')[0]}, ZooKeeper 3.8 (fsync on, "
        f"tickTime {args.zk_tick_ms} ms)",
        f"peer: {'TaskFlow ' + peer_version if peer_version else 'not run'}",
    ]


def run_throughput(
    run: Run, servers: Servers, args: argparse.Namespace, peer_version: str | None,
    peer_backends: tuple[str, ...],
) -> None:  # fmt: skip
    """Per K, per backend: this project, then TaskFlow with and without its claim listener."""
    for _ in range(args.repeat):
        for k in args.k:
            for backend in args.backends:
                what = {"system": "conductor", "backend": backend, "k": k}
                fields = run.attempt(
                    "throughput", what, throughput.run, servers, backend, k, args.jobs
                )
                if fields:
                    run.emit("throughput", fields)
                if backend not in peer_backends or not peer_version:
                    continue
                for listener in (True, False):
                    run.emit(
                        "throughput", peer.throughput(servers, backend, k, args.peer_jobs, listener)
                    )


def run_failover(
    run: Run, servers: Servers, args: argparse.Namespace, peer_version: str | None, *_: Any
) -> None:
    """Leased claims on Redis and SQLite; session-bound and leased claims on ZooKeeper;
    TaskFlow on ZooKeeper."""
    for backend in args.backends:
        configs = [(backend, None if backend == "zookeeper" else args.lease)]
        if backend == "zookeeper":
            configs.append(("zookeeper+lease", args.lease))
        for label, lease in configs:
            fields = run.attempt(
                "failover", {"backend": label}, failover.run, servers, backend, args.kills,
                lease=lease, session_timeout=args.session_timeout, label=label,
            )  # fmt: skip
            if fields:
                run.emit("failover", {"system": "conductor", **fields})
        if backend == "zookeeper" and peer_version:
            run.emit("failover", peer.failover(servers, args.kills, args.session_timeout))


def run_lowload(run: Run, servers: Servers, args: argparse.Namespace, *_: Any) -> None:
    """Idle cost and latency with K=1, then the herd at every K."""
    for backend in args.backends:
        for k in args.herd_k:
            result = run.attempt(
                "herd", {"backend": backend, "k": k}, lowload.run, servers, backend, k,
                args.latency_jobs if k == 1 else args.herd_jobs, rate=args.rate,
                idle_seconds=args.idle_seconds if k == 1 else 0.0,
            )  # fmt: skip
            if not result:
                continue
            idle, low = result
            if idle:
                run.emit("idle", idle)
            if k == 1:
                keys = ("backend", "k", "rate", "jobs", "p50_ms", "p99_ms", "max_ms")
                run.emit("latency", {key: low[key] for key in keys})
            run.emit("herd", low)


def run_backlog(run: Run, servers: Servers, args: argparse.Namespace, *_: Any) -> None:
    """Claim cost and start-up at each backlog size."""
    for backend in args.backends:
        rows = run.attempt(
            "backlog", {"backend": backend}, backlog.run, servers, backend, args.backlog
        )
        for row in rows or []:
            run.emit("backlog", row)


SECTION_RUNNERS: dict[str, Callable[..., None]] = {
    "throughput": run_throughput,
    "failover": run_failover,
    "lowload": run_lowload,
    "backlog": run_backlog,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_defaults(args)
    run = Run(args.out)
    peer_version = None
    peer_backends: tuple[str, ...] = ()
    if {"throughput", "failover"} & set(args.sections) and not args.skip_peer:
        peer_version = run.attempt("peer", {"backend": "-"}, peer.ensure)
        peer_backends = tuple(b for b in args.backends if b in ("redis", "zookeeper"))
    notes = machine_notes(args, peer_version)
    print("\n".join(notes), flush=True)
    compile_project()
    servers = Servers(zk_tick_ms=args.zk_tick_ms)
    started = time.monotonic()
    try:
        servers.start(args.backends)
        for section in args.sections:
            SECTION_RUNNERS[section](run, servers, args, peer_version, peer_backends)
    finally:
        servers.stop()
    notes.append(f"bench wall time: {(time.monotonic() - started) / 60:.1f} min")
    report = render(run.figures, notes)
    print("\n" + report, flush=True)
    if args.out:
        args.out.write_text(report + "\n\n" + "\n".join(run.lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
