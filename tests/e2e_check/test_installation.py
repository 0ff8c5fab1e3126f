"""The installation checks against the real API server and kubelet: nothing
installed, a CSIDriver object with wrong fields, then the driver registered
with the kubelet (CSINode) and a ready DaemonSet pod on the node.

A driver name and namespace of its own, so that the reports of the other
tests (the default driver name) do not depend on whether this one ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e import session
from e2e.kube import APP_IMAGE, wait_for
from e2e_check.scenario import ENFORCE, CheckCluster, create_namespace
from support.agent import DemoAgent
from support.driver import DriverProcess

DRIVER = "check.e2e.example.com"
NAMESPACE = "chk-driver"
DAEMONSET = "datadog-csi-driver-node-server"


@pytest.fixture(scope="module")
def node_agent(cluster_env: dict[str, str]) -> Iterator[DemoAgent]:
    yield from session.node_agent(cluster_env)


def _gone(delete: Any, *args: str) -> None:
    try:
        delete(*args)
    except ApiException as err:
        if err.status != 404:
            raise


def _csidriver(cluster: CheckCluster, spec: dict[str, Any]) -> None:
    _gone(cluster.storage.delete_csi_driver, DRIVER)
    cluster.storage.create_csi_driver({"metadata": {"name": DRIVER}, "spec": spec})


@pytest.fixture
def clean(scenario: CheckCluster) -> Iterator[CheckCluster]:
    """Nothing of this driver installed, before and after."""
    def remove() -> None:
        _gone(scenario.storage.delete_csi_driver, DRIVER)
        _gone(scenario.apps.delete_namespaced_daemon_set, DAEMONSET, NAMESPACE)

    remove()
    yield scenario
    remove()


def _stand_in_daemonset() -> dict[str, Any]:
    """What the check reads of the driver's DaemonSet: its name, selector and pods' readiness
    (the driver itself runs as a process on the node)."""
    labels = {"app": DAEMONSET}
    return {"metadata": {"name": DAEMONSET, "labels": {"app.kubernetes.io/name": "datadog-csi-driver"}},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "stand-in", "image": APP_IMAGE, "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"]}]}}}}


def _installation(check, *extra: str) -> tuple[int, dict[str, Any]]:
    run = check("-n", NAMESPACE, "--driver-name", DRIVER, "--driver-namespace", NAMESPACE, "-o", "json", *extra)
    return run.code, run.json()


def test_installation_from_nothing_to_ready(check, clean, cluster_env, node_agent):
    scenario = clean
    create_namespace(scenario, NAMESPACE, {ENFORCE: "privileged"})
    wait_for("the DaemonSet's pods of an earlier run to go", lambda: not scenario.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"app={DAEMONSET}").items, timeout=60)
    code, report = _installation(check)
    items = {i["subject"]: i for i in report["installation"]["items"]}
    assert code == 1
    assert not any(i["ok"] for i in items.values())
    assert "not found" in items[f"CSIDriver {DRIVER}"]["detail"]
    assert report["installation"]["nodesWithoutDriver"] == [
        {"node": scenario.node_name, "registered": False, "driverPod": "none", "reason": ""}]

    _csidriver(scenario, {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "File",
                          "volumeLifecycleModes": ["Persistent"]})
    _code, report = _installation(check)
    detail = report["installation"]["items"][0]["detail"]
    assert "fsGroupPolicy is 'File', want 'None'" in detail and "lack Ephemeral" in detail

    _csidriver(scenario, {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "None",
                          "volumeLifecycleModes": ["Ephemeral", "Persistent"]})
    workdir = os.path.join(cluster_env["CLUSTER_DIR"], "check-driver")
    os.makedirs(workdir, exist_ok=True)
    driver = DriverProcess(workdir=workdir, kubelet_root=scenario.kubelet_root, dsd_path=node_agent.dsd_path,
                           apm_path=node_agent.apm_path)
    driver.extra_args = ["--driver-name", DRIVER, "--kubelet-registration-path", driver.socket_path]
    scenario.apps.create_namespaced_daemon_set(NAMESPACE, _stand_in_daemonset())
    try:
        driver.start()
        wait_for("the kubelet to register the driver (CSINode)", lambda: DRIVER in scenario.csinode_drivers(),
                 timeout=60, describe=lambda: driver.logs()[-2000:])
        code, report = wait_for("a ready pod of the DaemonSet", lambda: _ready_report(check), timeout=90)
        assert code == 0, report
        assert report["installation"]["nodesWithoutDriver"] == []
        assert [i["detail"] for i in report["installation"]["items"]] == [
            "attachRequired false, podInfoOnMount true, fsGroupPolicy None, modes Ephemeral, Persistent",
            "the driver is registered on 1 of 1 schedulable nodes",
            "1 of 1 scheduled pods ready"]
    finally:
        driver.stop()
    code, report = wait_for("the kubelet to deregister the stopped driver", lambda: _unregistered_report(check),
                            timeout=60)
    assert code == 1
    assert report["installation"]["nodesWithoutDriver"] == [
        {"node": scenario.node_name, "registered": False, "driverPod": "ready", "reason": ""}]


def _ready_report(check) -> tuple[int, dict[str, Any]] | None:
    code, report = _installation(check)
    return (code, report) if all(i["ok"] for i in report["installation"]["items"]) else None


def _unregistered_report(check) -> tuple[int, dict[str, Any]] | None:
    code, report = _installation(check)
    return (code, report) if report["installation"]["nodesWithoutDriver"] else None
