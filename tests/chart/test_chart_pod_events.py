"""Pod events (podEvents) and waiting for the Agent (driver.waitForAgentSocket):
the ServiceAccount and its minimal RBAC, the token of the driver container
alone, the driver's arguments, and none of it where GKE Autopilot forbids it."""

from __future__ import annotations

import pytest

from .chart_helpers import (
    DAEMONSET_NAME,
    NAMESPACE,
    args_by_flag,
    daemonset,
    driver,
    mounts_by_name,
    objects_of_kind,
    only,
    render,
    render_error,
    volumes_by_name,
)
from .scenarios import SCENARIOS

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The driver's arguments before these features: what the Autopilot allowlists admit.
AUTOPILOT_FLAGS = {"--driver-name", "--csi-endpoint", "--apm-host-socket-path", "--dsd-host-socket-path",
                   "--storage-path", "--kubelet-root-dir", "--metrics-port"}


def scenario(name: str) -> list[dict]:
    values, extra_args = SCENARIOS[name]
    return render(values, extra_args)


def test_the_role_allows_creating_and_patching_events_and_nothing_else() -> None:
    role = only(render(), "ClusterRole")
    assert role["metadata"]["name"] == DAEMONSET_NAME
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]


def test_the_binding_gives_the_role_to_the_drivers_service_account() -> None:
    objects = render()
    account = only(objects, "ServiceAccount")
    assert account["metadata"] == {**account["metadata"], "name": DAEMONSET_NAME, "namespace": NAMESPACE}
    assert account["automountServiceAccountToken"] is False
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": DAEMONSET_NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": DAEMONSET_NAME, "namespace": NAMESPACE}]
    assert only(objects, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == DAEMONSET_NAME


def test_only_the_driver_container_gets_the_token() -> None:
    ds = daemonset()
    spec = ds["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert mounts_by_name(driver(ds))["api-token"] == {"name": "api-token", "mountPath": TOKEN_DIR,
                                                       "readOnly": True}
    holders = [c["name"] for c in spec["containers"] if "api-token" in mounts_by_name(c)]
    assert holders == ["csi-node-driver"]
    sources = volumes_by_name(ds)["api-token"]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}
    assert sources[1]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert sources[2]["downwardAPI"]["items"] == [
        {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]


def test_the_check_interval_is_passed_to_the_driver() -> None:
    assert args_by_flag(driver(daemonset()))["--stale-check-interval"] == "60s"
    assert args_by_flag(driver(only(scenario("pod-events-interval"), "DaemonSet")))["--stale-check-interval"] == "5m"


def test_disabled_renders_no_account_no_token_and_turns_the_check_off() -> None:
    objects = scenario("pod-events-disabled")
    for kind in RBAC_KINDS:
        assert objects_of_kind(objects, kind) == [], kind
    ds = only(objects, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert "serviceAccountName" not in spec and spec["automountServiceAccountToken"] is False
    assert "api-token" not in volumes_by_name(ds) and "api-token" not in mounts_by_name(driver(ds))
    assert args_by_flag(driver(ds))["--stale-check-interval"] == "0s"


@pytest.mark.parametrize("name", ["autopilot-workload-allowlists", "autopilot-legacy"])
def test_autopilot_gets_neither_feature_nor_any_new_argument(name: str) -> None:
    values, extra_args = SCENARIOS[name]
    objects = render({**values, "podEvents": {"enabled": True}}, extra_args)
    for kind in RBAC_KINDS:
        assert objects_of_kind(objects, kind) == [], kind
    ds = only(objects, "DaemonSet")
    assert "serviceAccountName" not in ds["spec"]["template"]["spec"]
    assert "api-token" not in volumes_by_name(ds)
    assert set(args_by_flag(driver(ds))) == AUTOPILOT_FLAGS


def test_waiting_for_the_agent_is_off_unless_asked() -> None:
    assert "--wait-for-agent-socket" not in args_by_flag(driver(daemonset()))
    assert "--wait-for-agent-socket" not in args_by_flag(driver(daemonset({"driver": {"waitForAgentSocket": "0s"}})))
    ds = only(scenario("wait-for-agent-socket"), "DaemonSet")
    assert args_by_flag(driver(ds))["--wait-for-agent-socket"] == "45s"


def test_waiting_for_the_agent_is_refused_on_autopilot() -> None:
    values, extra_args = SCENARIOS["autopilot-workload-allowlists"]
    error = render_error({**values, "driver": {"waitForAgentSocket": "30s"}}, extra_args)
    assert "driver.waitForAgentSocket is not available on GKE Autopilot" in error


def test_the_driver_reads_what_the_chart_sets() -> None:
    from .test_chart_driver_contract import loaded_config

    assert loaded_config("defaults").stale_check_interval == 60
    assert loaded_config("pod-events-interval").stale_check_interval == 300
    assert loaded_config("pod-events-disabled").stale_check_interval == 0
    assert loaded_config("wait-for-agent-socket").wait_for_agent_socket == 45
    assert loaded_config("defaults").wait_for_agent_socket == 0
