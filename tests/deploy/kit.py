"""What the deployment tests share: the effective ``conductor run`` options of an artefact.

Each artefact (Kubernetes args, compose environment, systemd ``Environment=``,
Dockerfile ``ENV``) is parsed by the real ``conductor run`` parser, so the
tests compare the artefacts with the CLI's own defaults, never with copies.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from unittest import mock

import pytest

from conductor import cli
from jobboard import envopts

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def run_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``run`` subparser, with options defaulted from ``environ`` (and nothing else)."""
    with mock.patch.dict(os.environ, dict(environ or {}), clear=True):
        parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def run_options(args: list[str] | None = None, environ: Mapping[str, str] | None = None):
    """``conductor run`` options as the daemon would see them with these args and variables."""
    return run_parser(environ).parse_args(args or [])


def option(name: str) -> argparse.Action:
    """The ``conductor run`` option ``--name`` (its default, const and help)."""
    return next(a for a in run_parser()._actions if name in a.option_strings)


def default_metrics_port() -> int:
    """The port of a bare ``--metrics-port``: the one the deployment kit must use."""
    return int(option("--metrics-port").const)


def stop_budget(options: argparse.Namespace) -> float:
    """Seconds a stopping conductor may take before it is done: the drain, plus any
    extra stop timeout the command has."""
    return float(options.drain_timeout) + float(getattr(options, "stop_timeout", 0) or 0)


def known_variables() -> set[str]:
    """Every ``CONDUCTOR_*`` variable ``conductor run`` reads."""
    return {
        envopts.env_name("CONDUCTOR", s)
        for a in run_parser()._actions
        for s in a.option_strings
        if s.startswith("--") and s not in ("--help",)
    }


def conductor_variables(environ: Mapping[str, str]) -> Iterator[str]:
    return (k for k in environ if k.startswith("CONDUCTOR_"))


_DEFAULTED = re.compile(r"\$\{(\w+):?-([^}]*)\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with VAR unset."""
    return _DEFAULTED.sub(lambda m: m.group(2), value)


def seconds(text: str | int | float) -> float:
    """``45s``, ``1m30s``, ``60`` (compose and systemd durations) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|s|min|m|h)?", text.strip())
    assert parts and "".join(n + (u or "") for n, u in parts) == text.replace(" ", ""), text
    return sum(float(n) * units[u or "s"] for n, u in parts)


def tool(name: str, why: str) -> str:
    """A command-line tool next to this Python or on PATH; fails in CI, skips loudly elsewhere."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({why})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
