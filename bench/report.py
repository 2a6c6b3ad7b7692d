"""The printed table: every figure of a run, grouped, in Markdown."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from bench.common import median

Figure = dict[str, Any]

SYSTEMS = {
    "conductor": "this project",
    "taskflow-listener-on": "TaskFlow, claim listener on",
    "taskflow-listener-off": "TaskFlow, claim listener off",
    "taskflow": "TaskFlow",
}


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell: few significant digits, '—' when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ordered(backends: set[str]) -> list[str]:
    """Backends in the bench's usual order (Redis, ZooKeeper, SQLite)."""
    order = ("redis", "zookeeper", "zookeeper+lease", "sqlite")
    return sorted(backends, key=lambda b: order.index(b) if b in order else len(order))


def _by(figures: list[Figure], name: str) -> list[Figure]:
    return [f for f in figures if f.get("figure") == name and "error" not in f]


def _medians(rows: list[Figure], key: str) -> dict[tuple[str, str, int], float]:
    """Median of ``key`` per (backend, system, k) over repeated runs."""
    groups: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in rows:
        if row.get(key) is not None:
            groups[(row["backend"], row.get("system", "conductor"), row["k"])].append(row[key])
    return {group: median(values) for group, values in groups.items()}


def throughput_table(figures: list[Figure]) -> list[str]:
    rows = _by(figures, "throughput")
    if not rows:
        return []
    ks = sorted({r["k"] for r in rows})
    jobs = sorted({(r.get("system", "conductor") != "conductor", r["jobs"]) for r in rows})
    out = [
        "Throughput: jobs of 3 no-op tasks posted at once to K idle conductor processes "
        + "(jobs: "
        + ", ".join(f"{'TaskFlow' if peer else 'this project'} {n}" for peer, n in jobs)
        + ")",
        "",
    ]
    metrics: list[tuple[str, str]] = [
        ("jobs/s", "jobs_per_s"),
        ("conductor CPU ms/job", "cpu_ms_per_job"),
        ("Redis commands/job (scripts' included)", "redis_cmds_per_job"),
        ("ZooKeeper packets/job (conductors')", "zk_packets_per_job"),
    ]
    body = []
    for backend in _ordered({r["backend"] for r in rows}):
        for label, key in metrics:
            values = _medians(rows, key)
            for system, name in SYSTEMS.items():
                cells = [values.get((backend, system, k)) for k in ks]
                if all(c is None for c in cells):
                    continue
                body.append([backend, label, name, *(fmt(c) for c in cells)])
            if key == "jobs_per_s":
                ours = [values.get((backend, "conductor", k)) for k in ks]
                peer = [values.get((backend, "taskflow-listener-on", k)) for k in ks]
                if any(p for p in peer):
                    ratio = [
                        fmt(o / p, 1) + "x" if o and p else "—"
                        for o, p in zip(ours, peer, strict=True)
                    ]
                    body.append(
                        [backend, "jobs/s ratio", "project / TaskFlow (listener on)", *ratio]
                    )
    out += table(["backend", "figure", "system", *(f"K={k}" for k in ks)], body)
    return out


def _get(key: str) -> Callable[[Figure], Any]:
    return lambda row: row.get(key)


def _pair(first: str, second: str) -> Callable[[Figure], Any]:
    """Two figures in one cell (``a / b``), or None when the row has neither."""
    return lambda row: (
        f"{fmt(row.get(first))} / {fmt(row.get(second))}" if first in row or second in row else None
    )


def _simple(
    figures: list[Figure], name: str, title: str, columns: list[tuple[str, Callable[[Figure], Any]]]
) -> list[str]:
    rows = _by(figures, name)
    if not rows:
        return []
    body = [[fmt(get(row)) for _, get in columns] for row in rows]
    return [title, "", *table([c for c, _ in columns], body)]


def herd_table(figures: list[Figure]) -> list[str]:
    rows = _by(figures, "herd")
    if not rows:
        return []
    ks = sorted({r["k"] for r in rows})
    rate = rows[0].get("rate")
    body = []
    for backend in _ordered({r["backend"] for r in rows}):
        mine = {r["k"]: r for r in rows if r["backend"] == backend}
        for label, key in (
            ("conductor CPU ms/job", "cpu_ms_per_job"),
            ("round trips/job (Redis requests, ZooKeeper packets)", "round_trips_per_job"),
            ("Redis client commands/job", "redis_client_cmds_per_job"),
            ("Redis commands in scripts/job", "redis_cmds_in_scripts_per_job"),
            ("post->claim p50 ms", "p50_ms"),
            ("post->claim p99 ms", "p99_ms"),
        ):
            cells = [mine.get(k, {}).get(key) for k in ks]
            if any(c is not None for c in cells):
                body.append([backend, label, *(fmt(c) for c in cells)])
    title = (
        f"Herd: K idle conductors, jobs posted at {fmt(rate)} jobs/s (costs of all K conductors)"
    )
    return [title, "", *table(["backend", "figure", *(f"K={k}" for k in ks)], body)]


def render(figures: list[Figure], notes: list[str]) -> str:
    """The whole report: notes, then one sub-table per figure family."""
    parts: list[list[str]] = [notes]
    parts.append(throughput_table(figures))
    parts.append(
        _simple(
            figures,
            "failover",
            "Failover: kill -9 of the owner of a claimed job -> claim by another conductor",
            [
                ("backend", lambda r: r["backend"]),
                ("system", lambda r: SYSTEMS.get(r.get("system", ""), r.get("system"))),
                ("lease / session", lambda r: r["timeout"]),
                ("kills", lambda r: r["kills"]),
                ("median s", lambda r: r["median_s"]),
                ("max s", lambda r: r["max_s"]),
                ("ZooKeeper tick ms", _get("tick_ms")),
                ("kill -> expiry median / max s", _pair("expiry_median_s", "expiry_max_s")),
                ("expiry -> claim median / max ms", _pair("notice_median_ms", "notice_max_ms")),
            ],
        )
    )
    parts.append(
        _simple(
            figures,
            "latency",
            "Post->claim latency, idle conductors, steady arrivals",
            [
                ("backend", lambda r: r["backend"]),
                ("K", lambda r: r["k"]),
                ("jobs/s", lambda r: r["rate"]),
                ("jobs", lambda r: r["jobs"]),
                ("p50 ms", lambda r: r["p50_ms"]),
                ("p99 ms", lambda r: r["p99_ms"]),
            ],
        )
    )
    parts.append(
        _simple(
            figures,
            "idle",
            "Idle cost of one conductor",
            [
                ("backend", lambda r: r["backend"]),
                ("window s", lambda r: r["seconds"]),
                ("CPU % of a core", lambda r: r["cpu_pct"]),
                ("round trips/s (Redis requests, ZooKeeper packets)", _get("round_trips_per_s")),
                ("Redis client commands/s", _get("redis_client_cmds_per_s")),
                ("Redis commands in scripts/s", _get("redis_cmds_in_scripts_per_s")),
            ],
        )
    )
    parts.append(herd_table(figures))
    parts.append(
        _simple(
            figures,
            "backlog",
            "Claim cost and conductor start-up with jobs waiting",
            [
                ("backend", lambda r: r["backend"]),
                ("waiting jobs", lambda r: r["waiting"]),
                ("claim_next p50 ms", lambda r: r.get("claim_p50_ms")),
                ("claim_next max ms", lambda r: r.get("claim_max_ms")),
                ("start -> registered s", lambda r: r["registered_s"]),
                ("start -> first claim s", lambda r: r["first_claim_s"]),
                ("RSS MB", lambda r: r["rss_mb"]),
            ],
        )
    )
    errors = [f for f in figures if "error" in f]
    if errors:
        parts.append(["Not measured (errors):", ""] + [f"- {e}" for e in errors])
    return "\n\n".join("\n".join(p) for p in parts if p)
