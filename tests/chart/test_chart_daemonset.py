"""The node server DaemonSet: driver container, registrar sidecar, volumes."""

from __future__ import annotations

import pytest

from .chart_helpers import (
    DAEMONSET_NAME,
    DRIVER_NAME,
    NAMESPACE,
    args_by_flag,
    daemonset,
    driver,
    env_by_name,
    mounts_by_name,
    registrar,
    render,
    volumes_by_name,
)
from .scenarios import SCENARIOS

PLUGIN_DIR = "/var/lib/kubelet/plugins/datadog.csi/driver"


def scenario_daemonset(name: str) -> dict:
    values, extra_args = SCENARIOS[name]
    return daemonset(values, extra_args)


def test_defaults_render_exactly_the_daemonset_the_csidriver_and_the_events_rbac() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render())
    assert kinds == [("CSIDriver", DRIVER_NAME), ("ClusterRole", DAEMONSET_NAME),
                     ("ClusterRoleBinding", DAEMONSET_NAME), ("DaemonSet", DAEMONSET_NAME),
                     ("ServiceAccount", DAEMONSET_NAME)]


def test_daemonset_name_namespace_and_selector() -> None:
    ds = daemonset()
    assert ds["metadata"]["name"] == DAEMONSET_NAME
    assert ds["metadata"]["namespace"] == NAMESPACE
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector == {"app": DAEMONSET_NAME}
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_pods_opt_out_of_datadog_admission_controller() -> None:
    labels = daemonset()["spec"]["template"]["metadata"]["labels"]
    assert labels["admission.datadoghq.com/enabled"] == "false"


def test_driver_container_is_privileged_with_read_only_root() -> None:
    context = driver(daemonset())["securityContext"]
    assert context["privileged"] is True
    assert context["readOnlyRootFilesystem"] is True


def test_driver_image_tag_defaults_to_app_version() -> None:
    assert driver(daemonset())["image"] == "datadog-csi-driver:0.1.0"
    assert driver(scenario_daemonset("name-overrides"))["image"] == "datadog-csi-driver:9.9.9"


def test_driver_arguments() -> None:
    args = args_by_flag(driver(daemonset()))
    assert args == {
        "--driver-name": DRIVER_NAME,
        "--csi-endpoint": "unix:///csi/csi.sock",
        "--apm-host-socket-path": "/var/run/datadog/apm.socket",
        "--dsd-host-socket-path": "/var/run/datadog/dsd.socket",
        "--storage-path": "/var/lib/datadog-csi-driver",
        "--kubelet-root-dir": "/var/lib/kubelet",
        "--metrics-port": "5000",
        "--stale-check-interval": "60s",
    }


def test_node_id_comes_from_the_node_name() -> None:
    env = env_by_name(driver(daemonset()))
    assert env["NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_apm_enabled_is_passed_through_the_environment() -> None:
    assert env_by_name(driver(daemonset()))["DD_APM_ENABLED"]["value"] == "true"
    disabled = env_by_name(driver(scenario_daemonset("apm-disabled")))
    assert disabled["DD_APM_ENABLED"]["value"] == "false"


def test_metrics_port_and_probes() -> None:
    c = driver(daemonset())
    assert c["ports"] == [{"name": "metrics", "containerPort": 5000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # A liveness probe that gives up faster than readiness would restart a
    # driver that is merely slow to answer Probe.
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["failureThreshold"] * live["periodSeconds"] >= ready["failureThreshold"] * ready["periodSeconds"]


def test_plugin_directory_is_shared_with_the_registrar() -> None:
    ds = daemonset()
    volume = volumes_by_name(ds)["plugin-dir"]
    assert volume["hostPath"] == {"path": PLUGIN_DIR, "type": "DirectoryOrCreate"}
    assert mounts_by_name(driver(ds))["plugin-dir"]["mountPath"] == "/csi"
    assert not mounts_by_name(driver(ds))["plugin-dir"].get("readOnly", False)
    assert mounts_by_name(registrar(ds))["plugin-dir"]["mountPath"] == "/csi"


def test_registrar_wiring() -> None:
    ds = daemonset()
    c = registrar(ds)
    assert c["image"] == "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.15.0"
    assert args_by_flag(c) == {
        "--csi-address": "/csi/csi.sock",
        "--kubelet-registration-path": f"{PLUGIN_DIR}/csi.sock",
    }
    # The address the registrar dials is the driver's endpoint as the driver sees it.
    assert args_by_flag(driver(ds))["--csi-endpoint"] == "unix://" + args_by_flag(c)["--csi-address"]
    registration = volumes_by_name(ds)["registration-dir"]
    assert registration["hostPath"] == {"path": "/var/lib/kubelet/plugins_registry", "type": "Directory"}
    assert mounts_by_name(c)["registration-dir"]["mountPath"] == "/registration"
    assert "securityContext" not in c


def test_builtin_registration_replaces_the_sidecar() -> None:
    ds = scenario_daemonset("builtin-registrar")
    containers = [c["name"] for c in ds["spec"]["template"]["spec"]["containers"]]
    assert containers == ["csi-node-driver"]
    c = driver(ds)
    # The driver answers the kubelet's plugin watcher itself, giving the CSI
    # socket as the kubelet sees it on the host.
    assert args_by_flag(c)["--kubelet-registration-path"] == f"{PLUGIN_DIR}/csi.sock"
    assert args_by_flag(c)["--kubelet-root-dir"] == "/var/lib/kubelet"
    assert mounts_by_name(c)["registration-dir"]["mountPath"] == "/var/lib/kubelet/plugins_registry"
    assert "--kubelet-registration-path" not in args_by_flag(driver(daemonset()))


@pytest.mark.parametrize("scenario", ["kubelet-root-dir", "kubelet-root-dir-builtin"])
def test_every_kubelet_path_follows_the_kubelet_root_dir(scenario: str) -> None:
    root = SCENARIOS[scenario][0]["kubeletRootDir"]
    ds = scenario_daemonset(scenario)
    assert args_by_flag(driver(ds))["--kubelet-root-dir"] == root
    kubelet_volumes = {name: v["hostPath"]["path"] for name, v in volumes_by_name(ds).items()
                       if name in ("plugin-dir", "registration-dir", "mountpoint-dir", "storage-dir")}
    assert kubelet_volumes and all(path.startswith(root + "/") for path in kubelet_volumes.values())
    assert mounts_by_name(driver(ds))["mountpoint-dir"]["mountPath"] == f"{root}/pods"
    containers = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
    registration = (args_by_flag(driver(ds)) if "builtin" in scenario
                    else args_by_flag(containers["csi-node-driver-registrar"]))
    assert registration["--kubelet-registration-path"] == f"{root}/plugins/datadog.csi/driver/csi.sock"
    for c in containers.values():
        for mount in c.get("volumeMounts", []):
            assert not mount["mountPath"].startswith("/var/lib/kubelet"), (c["name"], mount)


def test_pod_volume_directory_uses_bidirectional_propagation() -> None:
    ds = daemonset()
    mount = mounts_by_name(driver(ds))["mountpoint-dir"]
    assert mount["mountPath"] == "/var/lib/kubelet/pods"
    assert mount["mountPropagation"] == "Bidirectional"
    assert volumes_by_name(ds)["mountpoint-dir"]["hostPath"]["path"] == "/var/lib/kubelet/pods"


def test_storage_directory() -> None:
    ds = daemonset()
    assert volumes_by_name(ds)["storage-dir"]["hostPath"] == {
        "path": "/var/lib/kubelet/plugins/datadog.csi/storage",
        "type": "DirectoryOrCreate",
    }
    assert mounts_by_name(driver(ds))["storage-dir"]["mountPath"] == "/var/lib/datadog-csi-driver"


def socket_mounts(ds: dict) -> dict[str, dict]:
    volumes = volumes_by_name(ds)
    return {
        name: mount
        for name, mount in mounts_by_name(driver(ds)).items()
        if name in ("apm-socket", "dsd-socket")
        and volumes[name]["hostPath"]["path"] == mount["mountPath"]
    }


@pytest.mark.parametrize("scenario", ["defaults", "shared-socket-dir"])
def test_sockets_sharing_a_directory_get_one_read_only_mount(scenario: str) -> None:
    ds = scenario_daemonset(scenario)
    values = SCENARIOS[scenario][0].get("sockets", {})
    apm = values.get("apmHostSocketPath", "/var/run/datadog/apm.socket")
    mounts = socket_mounts(ds)
    assert list(mounts) == ["apm-socket"]
    assert mounts["apm-socket"]["mountPath"] == apm.rsplit("/", 1)[0]
    assert mounts["apm-socket"]["readOnly"] is True
    assert "dsd-socket" not in volumes_by_name(ds)


def test_sockets_in_different_directories_get_two_read_only_mounts() -> None:
    ds = scenario_daemonset("separate-socket-dirs")
    mounts = socket_mounts(ds)
    assert {name: m["mountPath"] for name, m in mounts.items()} == {
        "apm-socket": "/var/run/datadog-apm",
        "dsd-socket": "/var/run/datadog-dsd",
    }
    assert all(m["readOnly"] is True for m in mounts.values())
    args = args_by_flag(driver(ds))
    assert args["--apm-host-socket-path"] == "/var/run/datadog-apm/apm.socket"
    assert args["--dsd-host-socket-path"] == "/var/run/datadog-dsd/dsd.socket"


def test_every_mount_has_a_volume_and_every_volume_is_mounted() -> None:
    for name, (values, extra_args) in SCENARIOS.items():
        ds = daemonset(values, extra_args)
        volumes = set(volumes_by_name(ds))
        containers = ds["spec"]["template"]["spec"]["containers"]
        mounted = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
        assert mounted == volumes, name


def test_update_strategy_default() -> None:
    assert daemonset()["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "10%"},
    }


def test_driver_resources() -> None:
    assert "resources" not in driver(daemonset())
    assert driver(scenario_daemonset("resources"))["resources"] == {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"memory": "128Mi"},
    }


def test_scheduling_values() -> None:
    spec = scenario_daemonset("scheduling")["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["affinity"]["nodeAffinity"] == SCENARIOS["scheduling"][0]["nodeAffinity"]
    assert spec["priorityClassName"] == "system-node-critical"
    default_spec = daemonset()["spec"]["template"]["spec"]
    for key in ("tolerations", "nodeSelector", "affinity", "priorityClassName", "imagePullSecrets"):
        assert key not in default_spec, key


def test_pod_metadata_security_context_and_update_strategy_values() -> None:
    ds = scenario_daemonset("pod-metadata-and-security")
    template = ds["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/owner": "observability"}
    labels = template["metadata"]["labels"]
    assert labels["team"] == "observability"
    assert labels["app"] == DAEMONSET_NAME, "user labels must not break the selector"
    assert template["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert registrar(ds)["securityContext"] == {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 2}


def test_pods_do_not_get_an_api_token() -> None:
    """Only the driver container gets one, for its pod events (test_chart_pod_events)."""
    ds = daemonset()
    assert ds["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "api-token" not in mounts_by_name(registrar(ds))


def test_image_pull_secrets() -> None:
    spec = scenario_daemonset("pull-secrets")["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "image-registry"}]


def registry_auth_env(ds: dict) -> dict[str, dict]:
    return {k: v for k, v in env_by_name(driver(ds)).items() if k.startswith("DD_APM_REGISTRY_AUTH_")}


def test_apm_pull_secrets_become_registry_credentials() -> None:
    env = registry_auth_env(scenario_daemonset("pull-secrets"))
    assert env == {
        "DD_APM_REGISTRY_AUTH_0": {
            "name": "DD_APM_REGISTRY_AUTH_0",
            "valueFrom": {"secretKeyRef": {"name": "apm-registry-a", "key": ".dockerconfigjson"}},
        },
        "DD_APM_REGISTRY_AUTH_1": {
            "name": "DD_APM_REGISTRY_AUTH_1",
            "valueFrom": {"secretKeyRef": {"name": "apm-registry-b", "key": ".dockerconfigjson"}},
        },
    }


def test_image_pull_secrets_are_optional_registry_credentials_fallback() -> None:
    env = registry_auth_env(scenario_daemonset("image-pull-secrets-only"))
    assert env == {
        "DD_APM_REGISTRY_AUTH_0": {
            "name": "DD_APM_REGISTRY_AUTH_0",
            "valueFrom": {
                "secretKeyRef": {"name": "image-registry", "key": ".dockerconfigjson", "optional": True}
            },
        }
    }


@pytest.mark.parametrize("scenario", ["defaults", "apm-disabled"])
def test_no_registry_credentials_without_secrets_or_without_apm(scenario: str) -> None:
    assert registry_auth_env(scenario_daemonset(scenario)) == {}


def test_registry_allow_list_is_comma_separated() -> None:
    env = env_by_name(driver(scenario_daemonset("allow-list")))
    assert env["DD_REGISTRY_ALLOW_LIST"]["value"] == "gcr.io/datadoghq,public.ecr.aws/datadog"
    assert "DD_REGISTRY_ALLOW_LIST" not in env_by_name(driver(daemonset()))


def test_name_overrides() -> None:
    assert scenario_daemonset("name-overrides")["metadata"]["name"] == "dd-csi-node-server"
    ds = scenario_daemonset("fullname-override")
    assert ds["metadata"]["name"] == "datadog-csi-node-server"
    assert ds["spec"]["selector"]["matchLabels"] == {"app": "datadog-csi-node-server"}
