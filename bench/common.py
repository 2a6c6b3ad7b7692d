"""Helpers shared by the bench and the peer driver: /proc readings, percentiles, figure lines.

Standard library only, so the peer driver (which runs in its own virtual
environment without this project installed) can import it as a plain module.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process's live threads have run so far (0.0 once it is gone).

    Summed from ``/proc/PID/task/*/schedstat`` (nanoseconds, so short windows
    are measurable); where that is missing, user + system clock ticks of
    ``/proc/PID/stat`` (10 ms steps). Threads that have exited are not counted
    by the first method: the conductors keep theirs.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0
    try:
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}/task/{tasks[0]}/schedstat"):
            return tick_cpu_seconds(pid)
        return total / 1e9  # a thread ended while being read
    except OSError:
        return 0.0


def tick_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (exited threads included), from
    ``/proc/PID/stat`` clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def total_cpu(pids: Iterable[int]) -> float:
    """CPU seconds of several processes, summed."""
    return sum(cpu_seconds(pid) for pid in pids)


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """Median of ``values``; NaN when empty."""
    return statistics.median(values) if values else float("nan")


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something true; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def rounded(value: Any, digits: int = 3) -> Any:
    """Floats rounded for printing (recursively in dicts and lists); NaN becomes None."""
    if isinstance(value, float):
        return None if value != value else round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def figure_line(figure: str, **fields: Any) -> str:
    """One JSON line naming a figure and its fields (what scripts parse)."""
    return json.dumps({"figure": figure, **rounded(fields)}, sort_keys=False)


_CONS_LINE = re.compile(r"/([0-9.]+:\d+)\[\d+\]\((.*)\)")


def zookeeper_connections(port: int, host: str = "127.0.0.1") -> dict[str, tuple[int, int]]:
    """``{client address: (packets received, packets sent)}`` of the sessions a ZooKeeper
    server holds, from its ``cons`` four-letter word (connections without a session,
    such as this probe, are left out)."""
    chunks = []
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"cons")
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return {}
    result: dict[str, tuple[int, int]] = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        match = _CONS_LINE.search(line)
        if match is None or "sid=" not in match.group(2):
            continue
        fields = dict(item.split("=", 1) for item in match.group(2).split(",") if "=" in item)
        result[match.group(1)] = (int(fields.get("recved", 0)), int(fields.get("sent", 0)))
    return result


def packets_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], exclude: set[str]
) -> int:
    """Packets the server received from connections not in ``exclude`` between two
    :func:`zookeeper_connections` readings (a connection new since ``before`` counts
    from zero)."""
    return sum(
        recved - before.get(addr, (0, 0))[0]
        for addr, (recved, _sent) in after.items()
        if addr not in exclude
    )
