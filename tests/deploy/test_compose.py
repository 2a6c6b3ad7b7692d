"""The compose file parses and agrees with ``conductor run``'s options and the Dockerfile."""

from __future__ import annotations

import pytest

from conductor.options import board_url
from tests.deploy.kit import (
    DEPLOY,
    conductor_variables,
    default_metrics_port,
    interpolate,
    known_variables,
    run_options,
    seconds,
    stop_budget,
)

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra")

CONDUCTORS = ("conductor-1", "conductor-2")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def environ(service: dict) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def test_the_stack_has_a_board_two_conductors_and_the_admin_tool(services):
    assert {"redis", "zookeeper", *CONDUCTORS, "jobboard"} <= set(services)
    assert services["jobboard"]["entrypoint"] == ["jobboard"]
    for name in CONDUCTORS:
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY.parent / services[name]["build"]["dockerfile"]).exists()


def test_conductor_variables_are_real_options(services):
    known = known_variables()
    for name in (*CONDUCTORS, "jobboard"):
        unknown = set(conductor_variables(environ(services[name]))) - known
        assert not unknown, f"{name}: no such option: {unknown}"


@pytest.mark.parametrize("name", CONDUCTORS)
def test_each_conductor_serves_metrics_and_drains_before_being_killed(services, name):
    service = services[name]
    options = run_options(service["command"][1:], environ(service))
    assert service["command"][0] == "run"
    assert board_url(options, environ(service)) and options.flows
    assert options.metrics_port == default_metrics_port()
    assert options.metrics_host == "0.0.0.0"
    published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
    assert published == {options.metrics_port}
    assert seconds(service["stop_grace_period"]) > stop_budget(options)
    assert service["restart"] == "on-failure"


def test_conductors_and_the_admin_tool_share_one_board(services):
    boards = {environ(services[n])["CONDUCTOR_BOARD"] for n in (*CONDUCTORS, "jobboard")}
    assert len(boards) == 1
    assert next(iter(boards)).startswith("redis://redis:")
    names = {environ(services[n])["CONDUCTOR_NAME"] for n in CONDUCTORS}
    assert len(names) == len(CONDUCTORS)
