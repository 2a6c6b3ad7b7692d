"""Board-level metrics for Prometheus: the backlog and the conductors of every flow.

Conductors export what they do (``conductor.metrics``); these gauges say what
the board holds, so one exporter per board is enough to alert on a growing
backlog and to scale conductors on it. Each scrape reads the board through
the shared :class:`~jobboard.admin.web.snapshot.BoardReader` (a snapshot at
most ``max_age`` seconds old), so scrapes and dashboard share one read.

Gauges, labelled by ``flow``:

=====================================  ===============================================
``jobboard_jobs_waiting``              jobs waiting to be claimed
``jobboard_jobs_claimed``              jobs claimed (running)
``jobboard_oldest_waiting_seconds``    age of the oldest waiting job (0 when none wait)
``jobboard_jobs_failed``               failed jobs still kept (the retention window)
``jobboard_jobs_trashed``              trashed jobs still kept (the retention window)
``jobboard_conductors_live``           conductors serving the flow, heartbeat fresh
=====================================  ===============================================

and, without labels, ``jobboard_conductors`` (live ones), ``jobboard_board_up``
(1 when the last read worked) and ``jobboard_board_read_seconds``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobboard import errors
from jobboard.admin.web.snapshot import BoardReader

__all__ = ["CONTENT_TYPE", "BoardCollector", "board_registry", "exposition", "serve_metrics"]

log = logging.getLogger(__name__)

#: The content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Per-flow gauges: (name, help, snapshot row key).
_FLOW_GAUGES = (
    ("jobboard_jobs_waiting", "Jobs waiting to be claimed.", "waiting"),
    ("jobboard_jobs_claimed", "Jobs claimed by a conductor (running).", "claimed"),
    (
        "jobboard_oldest_waiting_seconds",
        "Age of the oldest waiting job in seconds (0 when none wait).",
        "oldest_waiting_age",
    ),
    ("jobboard_jobs_failed", "Failed jobs kept on the board (retention window).", "failed"),
    ("jobboard_jobs_trashed", "Trashed jobs kept on the board (retention window).", "trashed"),
    (
        "jobboard_conductors_live",
        "Conductors serving the flow whose heartbeat is fresh.",
        "conductors_live",
    ),
)


class BoardCollector(Collector):
    """Collects the board gauges from a reader at scrape time."""

    def __init__(self, reader: BoardReader, max_age: float = 1.0) -> None:
        self.reader = reader
        self.max_age = max_age

    def collect(self) -> Iterator[Any]:
        started = time.monotonic()
        up = GaugeMetricFamily("jobboard_board_up", "1 when the last board read worked, else 0.")
        try:
            doc = self.reader.read(max_age=self.max_age).doc
        except (errors.BoardError, OSError) as err:
            log.warning("metrics: board read failed: %s", err)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        for name, text, key in _FLOW_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["flow"])
            for row in doc["flows"]:
                family.add_metric([row["flow"]], float(row.get(key) or 0.0))
            yield family
        live = GaugeMetricFamily(
            "jobboard_conductors", "Registered conductors with a fresh heartbeat."
        )
        live.add_metric([], float(sum(1 for c in doc["conductors"] if not c["stale"])))
        yield live
        took = GaugeMetricFamily("jobboard_board_read_seconds", "Time this scrape spent.")
        took.add_metric([], time.monotonic() - started)
        yield took


def board_registry(reader: BoardReader, max_age: float = 1.0) -> CollectorRegistry:
    """A registry holding only the board gauges of ``reader``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoardCollector(reader, max_age))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the text exposition format."""
    return generate_latest(registry)


def serve_metrics(
    reader: BoardReader, port: int, host: str = "127.0.0.1", *, stop: threading.Event | None = None
) -> int:
    """Serve ``/metrics`` on ``host:port`` until SIGINT/SIGTERM (or ``stop``); returns 0.

    The signal handlers only set a flag (setting an event from a handler could
    deadlock against the main thread holding its lock); the loop reads it.
    """
    signalled: list[int] = []
    server, thread = start_http_server(port, host, registry=board_registry(reader))
    log.info("board metrics on http://%s:%s/metrics", host, server.server_port)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _: signalled.append(signum))
    try:
        while not signalled and not (stop is not None and stop.is_set()):
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.shutdown()
        server.server_close()
        thread.join(5)
    return 0
