"""The Kubernetes manifests parse and agree with ``conductor run``'s own options."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from conductor.metrics import LIVE_PATH, READY_PATH
from tests.deploy.kit import DEPLOY, default_metrics_port, run_options, stop_budget

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra")

K8S = DEPLOY / "kubernetes"


def documents() -> dict[str, dict]:
    """Every manifest listed by the kustomization, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} manifests"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return documents()


@pytest.fixture(scope="module")
def pod(manifests) -> dict:
    return manifests["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["containers"]
    return only


@pytest.fixture(scope="module")
def options(container):
    environ = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    assert container["args"][0] == "run"
    return run_options(container["args"][1:], environ)


def test_every_manifest_is_listed_and_labelled(manifests):
    assert set(manifests) == {"Deployment", "PodDisruptionBudget", "Secret"}
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    assert set(K8S.glob("*.yaml")) == {K8S / "kustomization.yaml", *(K8S / n for n in
        yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])}  # fmt: skip


def test_metrics_listen_on_all_interfaces_on_the_default_port(container, options):
    assert options.metrics_host == "0.0.0.0"
    assert options.metrics_port == default_metrics_port()
    (port,) = container["ports"]
    assert port["containerPort"] == options.metrics_port


def test_readiness_asks_healthz_and_liveness_an_endpoint_without_the_board(container):
    (port,) = container["ports"]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == READY_PATH
    assert live["path"] == LIVE_PATH != READY_PATH
    assert ready["port"] == live["port"] == port["name"]


def test_liveness_tolerates_more_than_a_short_outage(container):
    probe = container["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30


def test_the_grace_period_is_above_the_drain(pod, options):
    assert pod["terminationGracePeriodSeconds"] > stop_budget(options)


def test_the_board_url_comes_from_the_secret_as_a_file(manifests, pod, container, options):
    assert options.board is None and options.board_file
    secret = manifests["Secret"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (item,) = volume["secret"]["items"]
    assert item["key"] in secret["stringData"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert PurePosixPath(options.board_file) == PurePosixPath(mount["mountPath"]) / item["path"]
    # Readable by the (non-root) user the container runs as, through its group.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    assert volume["secret"]["defaultMode"] & 0o040
    assert not any("BOARD" in e["name"] and "value" in e for e in container.get("env", []))


def test_the_pod_runs_as_a_non_root_user(pod, container):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_disruptions_keep_most_conductors(manifests):
    spec = manifests["PodDisruptionBudget"]["spec"]
    replicas = manifests["Deployment"]["spec"]["replicas"]
    assert spec.get("maxUnavailable", replicas) < replicas or spec.get("minAvailable", 0) >= 1
