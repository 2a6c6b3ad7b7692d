"""Prometheus metrics and a health endpoint for a conductor daemon.

:class:`ConductorMetrics` owns its own ``CollectorRegistry`` (so two
conductors in one process, or a test, never share counters) and serves it
over a small threaded HTTP server::

    metrics = ConductorMetrics()
    health = HealthCheck(board, max_heartbeat_age=15.0)
    port = metrics.serve(9464, health=health)   # GET /metrics, /healthz, /livez
    metrics.on_event("claimed", flow="billing")
    metrics.observe_task("billing", "charge", 0.42)
    health.beat()                                 # after every successful heartbeat
    metrics.stop()

Exposed series (all prefixed ``conductor_``): ``jobs_claimed_total``,
``jobs_consumed_total``, ``jobs_failed_total``, ``jobs_abandoned_total``,
``jobs_trashed_total``, ``jobs_cancelled_total``, ``claim_losses_total``,
``resumes_total`` (label ``flow``); ``board_errors_total`` (label ``kind``);
``running_jobs``; ``task_duration_seconds`` (labels ``flow``, ``task``);
``lease_renewal_seconds``; plus the standard ``process_*`` series.

Two probes, for two questions:

- ``/healthz`` (readiness): can this conductor work now? Board connected,
  heartbeats fresh. It fails during a board outage, however short.
- ``/livez`` (liveness): is the process's own loop alive? It never asks the
  board, so a board outage does not get every conductor restarted; it fails
  only when the conductor's heartbeat loop has died while the process lives
  on, which a restart does cure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from conductor.types.notifier import ANY

__all__ = ["ConductorMetrics", "HealthCheck", "HealthFn", "loop_alive"]

log = logging.getLogger(__name__)

#: A health probe: ``(True, "ok")`` when healthy, ``(False, reason)`` otherwise.
HealthFn = Callable[[], tuple[bool, str]]

#: The paths the metrics server answers (the deployment kit's probes use them).
METRICS_PATH, READY_PATH, LIVE_PATH = "/metrics", "/healthz", "/livez"


def loop_alive(conductor: Any) -> HealthFn:
    """A liveness probe for a conductor: its heartbeat thread runs (or has not started yet).

    It reads only process-local state, never the board: a board outage must
    make a conductor unready, not get it restarted.
    """

    def probe() -> tuple[bool, str]:
        thread = getattr(conductor, "_heartbeat", None)
        if thread is None or thread.is_alive():
            return True, "ok"
        if conductor.wait(0):
            return True, "stopped"  # run() returned; the process is on its way out
        return False, "the heartbeat loop has died"

    return probe


class HealthCheck:
    """Healthy while the board connection is up and heartbeats are fresh.

    The conductor calls :meth:`beat` after every successful lease renewal /
    entity heartbeat; the probe fails once none happened for
    ``max_heartbeat_age`` seconds or when ``board.connected`` is false.
    The clock starts at construction, so a starting conductor is healthy for
    one heartbeat period before its first beat.
    """

    #: Seconds without a heartbeat after which the conductor is unhealthy.
    DEFAULT_MAX_HEARTBEAT_AGE: ClassVar[float] = 15.0

    def __init__(
        self,
        board: Any = None,
        max_heartbeat_age: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board = board
        self.max_heartbeat_age = (
            self.DEFAULT_MAX_HEARTBEAT_AGE if max_heartbeat_age is None else max_heartbeat_age
        )
        self._clock = clock
        self._last_beat = clock()

    def beat(self) -> None:
        """Record a successful heartbeat."""
        self._last_beat = self._clock()

    def __call__(self) -> tuple[bool, str]:
        if self.board is not None and not getattr(self.board, "connected", True):
            return False, "board connection is down"
        age = self._clock() - self._last_beat
        if age > self.max_heartbeat_age:
            return False, f"last heartbeat {age:.1f}s ago (limit {self.max_heartbeat_age:g}s)"
        return True, "ok"


class ConductorMetrics:
    """The counters, gauge and histograms of one conductor, in a private registry."""

    #: Prefix of every series.
    NAMESPACE: ClassVar[str] = "conductor"
    #: Task duration buckets (seconds): from a few milliseconds to an hour.
    TASK_BUCKETS: ClassVar[tuple[float, ...]] = (
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    )  # fmt: skip
    #: Lease renewal latency buckets (seconds): one round trip to the board.
    RENEWAL_BUCKETS: ClassVar[tuple[float, ...]] = (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    )  # fmt: skip
    #: Seconds between the HTTP server's shutdown checks (bounds how long ``stop`` takes).
    POLL_INTERVAL: ClassVar[float] = 0.2
    #: Label value used when an event names no flow.
    UNKNOWN_FLOW: ClassVar[str] = "unknown"
    #: The counters of job events, all labelled by ``flow``: name -> help text.
    JOB_COUNTERS: ClassVar[dict[str, str]] = {
        "jobs_claimed": "Jobs claimed.",
        "jobs_consumed": "Jobs completed and consumed.",
        "jobs_failed": "Jobs ended failed.",
        "jobs_abandoned": "Claims given back.",
        "jobs_trashed": "Jobs trashed.",
        "jobs_cancelled": "Jobs ended cancelled.",
        "claim_losses": "Claims lost while running.",
        "resumes": "Jobs resumed from saved progress.",
    }
    #: Event kinds :meth:`on_event` counts, and the counter each one increments.
    EVENTS: ClassVar[dict[str, str]] = {
        "claimed": "jobs_claimed",
        "consumed": "jobs_consumed",
        "failed": "jobs_failed",
        "abandoned": "jobs_abandoned",
        "trashed": "jobs_trashed",
        "cancelled": "jobs_cancelled",
        "claim_lost": "claim_losses",
        "lost": "claim_losses",
        "resumed": "resumes",
    }

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ns, reg = self.NAMESPACE, self.registry
        self.job_counters = {
            name: Counter(name, text, ["flow"], namespace=ns, registry=reg)
            for name, text in self.JOB_COUNTERS.items()
        }
        self.board_errors = Counter(
            "board_errors", "Failed board operations.", ["kind"], namespace=ns, registry=reg
        )
        self.running_jobs = Gauge("running_jobs", "Jobs running now.", namespace=ns, registry=reg)
        self.task_duration = Histogram(
            "task_duration_seconds",
            "Task execution time.",
            ["flow", "task"],
            buckets=self.TASK_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self.lease_renewal = Histogram(
            "lease_renewal_seconds",
            "Latency of one lease renewal round trip.",
            buckets=self.RENEWAL_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        ProcessCollector(registry=reg)
        # Labelled children and event spellings, looked up once (every job counts
        # two events and one duration per task; ``labels()`` takes a lock each time).
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        self._names: dict[str, str | None] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- what the conductor reports -------------------------------------------

    def on_event(self, kind: str, /, **labels: Any) -> bool:
        """Count a job event (``claimed``, ``consumed``, ``failed``, ``abandoned``,
        ``trashed``, ``cancelled``, ``claim_lost``, ``resumed``); ``flow=`` labels it.

        Spellings like ``claim lost`` or ``job-claimed`` are accepted. Returns
        False (and counts nothing) for an event kind that has no counter, so a
        daemon can forward every notifier event without filtering.
        """
        try:
            counter = self._names[kind]
        except KeyError:
            name = kind.strip().lower().replace("-", "_").replace(" ", "_")
            counter = self._names[kind] = self.EVENTS.get(name.removeprefix("job_"))
        if counter is None:
            log.debug("no metric for conductor event %r", kind)
            return False
        flow = str(labels.get("flow") or self.UNKNOWN_FLOW)
        child = self._counted.get((counter, flow))
        if child is None:
            child = self._counted[counter, flow] = self.job_counters[counter].labels(flow=flow)
        child.inc()
        return True

    def observe_task(self, flow: str, task: str, seconds: float) -> None:
        """Record one task execution's duration."""
        child = self._timed.get((flow, task))
        if child is None:
            child = self._timed[flow, task] = self.task_duration.labels(flow=flow, task=task)
        child.observe(seconds)

    def observe_renewal(self, seconds: float) -> None:
        """Record the latency of one lease renewal round trip."""
        self.lease_renewal.observe(seconds)

    def set_running(self, count: int) -> None:
        """Set how many jobs run now."""
        self.running_jobs.set(count)

    def board_error(self, kind: str) -> None:
        """Count a failed board operation, by kind (e.g. ``unavailable``, ``stale_token``)."""
        self.board_errors.labels(kind=kind).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    # -- the HTTP endpoint ------------------------------------------------------

    def serve(
        self,
        port: int,
        host: str = "127.0.0.1",
        health: HealthFn | None = None,
        live: HealthFn | None = None,
    ) -> int:
        """Serve ``/metrics``, ``/healthz`` and ``/livez`` from a background thread;
        returns the bound port.

        ``port=0`` picks a free port. ``/healthz`` answers 200 ``ok`` while
        ``health()`` returns True (always, when no probe is given) and 503
        with the reason otherwise; ``/livez`` does the same with ``live()``
        (healthy when not given).
        """
        if self._server is not None:
            raise RuntimeError(f"metrics are already served on port {self.port}")
        handler = type(
            "MetricsHandler", (_Handler,), {"metrics": self, "health": health, "live": live}
        )
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.POLL_INTERVAL},
            name="conductor-metrics",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("serving metrics on http://%s:%s/metrics", host, self.port)
        return self.port

    def stop(self) -> None:
        """Stop the HTTP server (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()


class _Handler(BaseHTTPRequestHandler):
    """``GET /metrics``, ``GET /healthz`` and ``GET /livez``; everything else is 404."""

    metrics: ClassVar[ConductorMetrics]
    health: ClassVar[HealthFn | None]
    live: ClassVar[HealthFn | None]

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            self._reply(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path in (READY_PATH, LIVE_PATH):
            cls = type(self)
            ok, reason = self._probe(cls.health if path == READY_PATH else cls.live)
            body = "ok" if ok else reason
            self._reply(200 if ok else 503, f"{body}\n".encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics, /healthz or /livez\n", "text/plain")

    @staticmethod
    def _probe(probe: HealthFn | None) -> tuple[bool, str]:
        if probe is None:
            return True, "ok"
        try:
            ok, reason = probe()
        except Exception as err:  # noqa: BLE001 - a broken probe means unhealthy
            log.warning("health probe failed: %s", err)
            return False, f"health check failed: {type(err).__name__}: {err}"
        return bool(ok), str(reason)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("metrics http: " + format, *args)


class _Attached:
    """Metrics fed by one conductor's notifier, served over HTTP; ``stop()`` ends both."""

    def __init__(self, conductor: Any, metrics: ConductorMetrics) -> None:
        self.conductor = conductor
        self.metrics = metrics

    def __call__(self, event: str, details: dict[str, Any]) -> None:
        metrics = self.metrics
        if event == "task_done":
            execution = (details.get("record") or {}).get("execution") or {}
            info = execution.get("execution") or execution
            start, end = info.get("task_start_time"), info.get("task_end_time")
            if start and end:
                metrics.observe_task(details.get("flow", ""), details.get("task", ""), end - start)
            return
        if event == "leases_renewed":
            metrics.observe_renewal(details.get("seconds", 0.0))
            return
        if event == "board_error":
            metrics.board_error(details.get("kind", "unknown"))
            return
        metrics.on_event(event, flow=details.get("flow"))

    def stop(self) -> None:
        self.conductor.notifier.deregister(ANY, self)
        self.metrics.stop()


def attach_metrics(conductor: Any, port: int, host: str = "127.0.0.1") -> _Attached:
    """Count a conductor's events and serve ``/metrics``, ``/healthz`` and ``/livez``
    on ``host:port``.

    Readiness is the conductor's own view (board connected, heartbeats
    fresh); liveness is its heartbeat loop running (see :func:`loop_alive`).
    """
    metrics = ConductorMetrics()
    attached = _Attached(conductor, metrics)
    metrics.running_jobs.set_function(lambda: len(conductor.running_jobs))
    conductor.notifier.register(ANY, attached)
    metrics.serve(port, host=host, health=conductor.healthy, live=loop_alive(conductor))
    return attached
