"""Peer driver: the bench workload on OpenStack TaskFlow, run inside the peer's venv.

Runs with the interpreter of ``bench/.peer-venv`` (TaskFlow, kazoo, redis);
it imports nothing from this project but ``common`` (standard library only).

    peer_driver.py throughput --backend redis --port 6400 --k 2 --jobs 2000 --claim-listener on
    peer_driver.py conductor --backend zookeeper --port 2190 --namespace ns --name c0

``throughput`` starts K conductor processes of this same script (TaskFlow's
blocking conductor, optionally with its ``CheckingClaimListener`` attached
through the documented ``_listeners_from_job`` hook), waits until each is
ready, freezes them (SIGSTOP), posts the jobs the documented way (a logbook
with one flow detail saved in the persistence backend, the flow factory saved
with ``save_factory_details``, the job posted with that book), lets them loose
(SIGCONT) and times them until the board is empty. Persistence: ZooKeeper for
the ZooKeeper board, the directory backend for the Redis board (TaskFlow has
no Redis persistence). One JSON line is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

#: ZooKeeper session timeout while the conductors are frozen for the posts (seconds).
FROZEN_SESSION_TIMEOUT = 30.0


def board_conf(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "redis":
        return {
            "board": "redis",
            "host": "127.0.0.1",
            "port": args.port,
            "namespace": args.namespace,
        }
    return {
        "board": "zookeeper",
        "hosts": f"127.0.0.1:{args.port}",
        "path": f"/peer-{args.namespace}/jobs",
        "timeout": args.session_timeout,
    }


def persistence_conf(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "redis":
        return {"connection": "dir", "path": os.path.join(args.workdir, args.namespace)}
    return {
        "connection": "zookeeper",
        "hosts": f"127.0.0.1:{args.port}",
        "path": f"/peer-{args.namespace}/books",
        "timeout": args.session_timeout,
    }


def open_backends(args: argparse.Namespace) -> tuple[Any, Any]:
    """(connected job board, upgraded persistence backend)."""
    from taskflow.jobs import backends as job_backends
    from taskflow.persistence import backends as persistence_backends

    persistence = persistence_backends.fetch(persistence_conf(args))
    with contextlib.closing(persistence.get_connection()) as conn:
        conn.upgrade()
    board = job_backends.fetch(args.namespace, board_conf(args), persistence=persistence)
    board.connect()
    return board, persistence


def cmd_conductor(args: argparse.Namespace) -> int:
    """One TaskFlow blocking conductor until SIGTERM."""
    from taskflow.conductors.backends import impl_blocking
    from taskflow.listeners import claims

    logging.basicConfig(level=logging.WARNING)
    board, persistence = open_backends(args)
    checking = args.claim_listener == "on"

    class Conductor(impl_blocking.BlockingConductor):
        def _listeners_from_job(self, job: Any, engine: Any) -> list[Any]:
            listeners = super()._listeners_from_job(job, engine)
            if checking:
                listeners.append(claims.CheckingClaimListener(engine, job, board, self._name))
            return listeners

    conductor = Conductor(args.name, board, persistence=persistence, engine="serial")
    signal.signal(signal.SIGTERM, lambda *_: conductor.stop())
    print("ready", flush=True)
    try:
        conductor.run()
    finally:
        board.close()
        persistence.close()
    return 0


def post_job(board: Any, persistence: Any, conn: Any, name: str) -> None:
    """Post one job as TaskFlow documents it: book + flow detail + factory, then the job."""
    import peer_flows
    from taskflow import engines
    from taskflow.persistence import models

    book = models.LogBook(name)
    detail = models.FlowDetail(name, str(uuid.uuid4()))
    book.add(detail)
    conn.save_logbook(book)
    engines.save_factory_details(detail, peer_flows.noop3, [], {}, backend=persistence)
    board.post(name, book=book, details={"store": {}})


def redis_total(port: int) -> int:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if not k.removeprefix("cmdstat_").startswith("info")
    )


def cmd_throughput(args: argparse.Namespace) -> int:
    """K peer conductors, N jobs posted while they are frozen; one JSON line."""
    args.session_timeout = FROZEN_SESSION_TIMEOUT
    board, persistence = open_backends(args)
    own = set(common.zookeeper_connections(args.port)) if args.backend == "zookeeper" else set()
    env = dict(os.environ, PYTHONPATH=HERE)
    base = [
        sys.executable, os.path.abspath(__file__), "conductor", "--backend", args.backend,
        "--port", str(args.port), "--namespace", args.namespace, "--workdir", args.workdir,
        "--claim-listener", args.claim_listener, "--session-timeout", str(args.session_timeout),
    ]  # fmt: skip
    procs = [
        subprocess.Popen([*base, "--name", f"peer{n}"], env=env, stdout=subprocess.PIPE, text=True)
        for n in range(args.k)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("peer conductor did not start")
        time.sleep(0.5)
        pids = [p.pid for p in procs]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        posted = time.monotonic()
        with contextlib.closing(persistence.get_connection()) as conn:
            for n in range(args.jobs):
                post_job(board, persistence, conn, f"job-{n}")
        post_rate = args.jobs / (time.monotonic() - posted)
        cpu0 = common.total_cpu(pids)
        cmd0 = redis_total(args.port) if args.backend == "redis" else 0
        cons0 = common.zookeeper_connections(args.port) if args.backend == "zookeeper" else {}
        started = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        polls = 0
        deadline = started + args.timeout
        while board.job_count:
            polls += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"peer: jobs not done within {args.timeout:.0f}s")
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        cpu = common.total_cpu(pids) - cpu0
        fields: dict[str, Any] = {
            "system": f"taskflow-listener-{args.claim_listener}",
            "backend": args.backend,
            "k": args.k,
            "jobs": args.jobs,
            "seconds": elapsed,
            "jobs_per_s": args.jobs / elapsed,
            "cpu_ms_per_job": cpu / args.jobs * 1000,
            "post_rate": post_rate,
        }
        if args.backend == "redis":
            # Each job_count poll of this driver is one HLEN.
            fields["redis_cmds_per_job"] = (redis_total(args.port) - cmd0 - polls - 1) / args.jobs
        else:
            after = common.zookeeper_connections(args.port)
            fields["zk_packets_per_job"] = common.packets_delta(cons0, after, own) / args.jobs
        print(json.dumps(common.rounded(fields)), flush=True)
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        board.close()
        persistence.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("throughput", "conductor"))
    parser.add_argument("--backend", choices=("redis", "zookeeper"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--claim-listener", choices=("on", "off"), default="on")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--name", default="peer")
    args = parser.parse_args()
    args.namespace = args.namespace or f"peer-{uuid.uuid4().hex[:8]}"
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="peer-bench-")
    if args.command == "conductor":
        return cmd_conductor(args)
    return cmd_throughput(args)


if __name__ == "__main__":
    sys.exit(main())
