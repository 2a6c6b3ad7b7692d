"""The peer: OpenStack TaskFlow in its own virtual environment, driven by ``peer_driver.py``.

The environment (``bench/.peer-venv``) is created on first use with pip:
TaskFlow at ``PEER_VERSION`` (the newest release when that one cannot be
had), kazoo and redis. Nothing of it is imported by this process: each
measurement is one run of the driver with the peer's interpreter, which prints
one JSON line. ``peer_failover.py`` times the takeover after kill -9 the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.servers import Servers

HERE = Path(__file__).resolve().parent
VENV = HERE / ".peer-venv"
DRIVER = HERE / "peer_driver.py"
FAILOVER = HERE / "peer_failover.py"
PEER_VERSION = "6.5.0"
PEER_PACKAGES = ("kazoo", "redis")


def python() -> Path:
    return VENV / "bin" / "python"


def installed_version() -> str | None:
    """The TaskFlow version in the peer environment, or None when there is none."""
    if not python().exists():
        return None
    result = subprocess.run(
        [str(python()), "-c", "import importlib.metadata as m; print(m.version('taskflow'))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def ensure() -> str:
    """Create the peer environment if needed; returns the TaskFlow version in it."""
    version = installed_version()
    if version:
        return version
    print(f"bench: installing TaskFlow {PEER_VERSION} into {VENV} ...", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    pip = [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if subprocess.run([*pip, f"taskflow=={PEER_VERSION}", *PEER_PACKAGES]).returncode != 0:
        print(f"bench: TaskFlow {PEER_VERSION} unavailable; installing the newest", file=sys.stderr)
        subprocess.run([*pip, "taskflow", *PEER_PACKAGES], check=True)
    version = installed_version()
    if not version:
        raise RuntimeError(f"TaskFlow did not install into {VENV}")
    return version


def throughput(
    servers: Servers, backend: str, conductors: int, jobs: int, listener: bool
) -> dict[str, Any]:
    """One peer throughput measurement (Redis or ZooKeeper board)."""
    system = f"taskflow-listener-{'on' if listener else 'off'}"
    if backend == "redis" and servers.redis is not None:
        port = servers.redis.port
    elif backend == "zookeeper" and servers.zookeeper is not None:
        port = servers.zookeeper.port
    else:
        return {"system": system, "backend": backend, "k": conductors, "error": "no peer board"}
    cmd = [
        str(python()), str(DRIVER), "throughput", "--backend", backend, "--port", str(port),
        "--k", str(conductors), "--jobs", str(jobs), "--workdir", str(servers.tmp),
        "--claim-listener", "on" if listener else "off",
    ]  # fmt: skip
    return _run(cmd, {"system": system, "backend": backend, "k": conductors})


def failover(servers: Servers, kills: int, session_timeout: float) -> dict[str, Any]:
    """Peer failover on the ZooKeeper board (TaskFlow's Redis claims never expire)."""
    what = {"system": "taskflow", "backend": "zookeeper", "kills": kills}
    if servers.zookeeper is None:
        return {**what, "error": "no ZooKeeper"}
    cmd = [
        str(python()), str(FAILOVER), "--port", str(servers.zookeeper.port), "--kills", str(kills),
        "--session-timeout", str(session_timeout), "--workdir", str(servers.tmp),
    ]  # fmt: skip
    return _run(cmd, what)


def _run(cmd: list[str], what: dict[str, Any]) -> dict[str, Any]:
    """Run a peer script; its last JSON line, or an error figure."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {**what, "error": "timed out"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**what, "error": tail[0][:200]}
    return {**what, **json.loads(lines[-1])}
