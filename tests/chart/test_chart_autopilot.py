"""GKE Autopilot: what renders on each Autopilot generation and what does not."""

from __future__ import annotations

from .chart_helpers import (
    AUTOPILOT_LEGACY,
    AUTOPILOT_WORKLOAD_ALLOWLISTS,
    driver,
    env_by_name,
    mounts_by_name,
    objects_of_kind,
    only,
    render,
    volumes_by_name,
)
from .scenarios import SCENARIOS

ALLOWLIST_LABEL = "cloud.google.com/matching-allowlist"
ALLOWLIST_PATHS = [
    f"Datadog/datadog-csi-driver/datadog-datadog-csi-driver-daemonset-exemption-{v}.yaml"
    for v in ("v1.1.0", "v1.1.1", "v1.1.2")
]


def scenario_objects(name: str) -> list[dict]:
    values, extra_args = SCENARIOS[name]
    return render(values, extra_args)


def apm_env(ds: dict) -> set[str]:
    return {name for name in env_by_name(driver(ds)) if name.startswith("DD_")}


def test_not_autopilot_renders_no_allowlist() -> None:
    objects = scenario_objects("pull-secrets")
    assert objects_of_kind(objects, "AllowlistSynchronizer") == []
    assert ALLOWLIST_LABEL not in only(objects, "DaemonSet")["metadata"]["labels"]


def test_workload_allowlist_generation_gets_synchronizer_and_label() -> None:
    objects = scenario_objects("autopilot-workload-allowlists")
    sync = only(objects, "AllowlistSynchronizer")
    assert sync["apiVersion"] == "auto.gke.io/v1"
    assert sync["metadata"]["name"] == "datadog-csi-synchronizer"
    assert sync["spec"]["allowlistPaths"] == ALLOWLIST_PATHS
    # The allowlist must exist before Autopilot sees the DaemonSet.
    assert sync["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    label = only(objects, "DaemonSet")["metadata"]["labels"][ALLOWLIST_LABEL]
    assert label == "datadog-datadog-csi-driver-daemonset-exemption-v1.1.2"
    assert any(path.endswith(f"/{label}.yaml") for path in ALLOWLIST_PATHS)


def test_workload_allowlist_generation_keeps_storage_and_apm_settings() -> None:
    ds = only(scenario_objects("autopilot-workload-allowlists"), "DaemonSet")
    assert "storage-dir" in volumes_by_name(ds)
    assert "storage-dir" in mounts_by_name(driver(ds))
    assert apm_env(ds) == {"DD_APM_ENABLED", "DD_REGISTRY_ALLOW_LIST"}


def test_legacy_generation_leaves_out_storage_and_apm_settings() -> None:
    objects = scenario_objects("autopilot-legacy")
    assert objects_of_kind(objects, "AllowlistSynchronizer") == []
    ds = only(objects, "DaemonSet")
    assert ALLOWLIST_LABEL not in ds["metadata"]["labels"]
    assert "storage-dir" not in volumes_by_name(ds)
    assert "storage-dir" not in mounts_by_name(driver(ds))
    assert apm_env(ds) == set()
    csidriver = only(objects, "CSIDriver")
    assert csidriver["metadata"]["annotations"]["csi.datadoghq.com/apm-enabled"] == "false"


def test_registry_credentials_are_never_rendered_on_autopilot() -> None:
    for scenario in ("autopilot-workload-allowlists", "autopilot-legacy"):
        ds = only(scenario_objects(scenario), "DaemonSet")
        assert not any(name.startswith("DD_APM_REGISTRY_AUTH") for name in env_by_name(driver(ds))), scenario
        # Pulling the driver image itself still needs its secret.
        assert ds["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "image-registry"}]


def test_workload_allowlist_apis_below_the_minimum_version_are_not_enough() -> None:
    """Before 1.32.1-gke.1729000 the allowlist for this driver is not served.

    `helm template --kube-version` keeps only major.minor.patch (it drops the
    "-gke.N" part a real cluster reports), so the GKE build number itself
    cannot be exercised here; the patch and minor boundaries can.
    """
    apis = tuple(a for a in AUTOPILOT_WORKLOAD_ALLOWLISTS if a.startswith("--api-versions"))
    for version in ("1.32.0-gke.9999999", "1.31.5", "1.25.0"):
        objects = render({}, (*apis, f"--kube-version={version}"))
        assert objects_of_kind(objects, "AllowlistSynchronizer") == [], version
        assert ALLOWLIST_LABEL not in only(objects, "DaemonSet")["metadata"]["labels"], version
    objects = render({}, (*apis, "--kube-version=1.33.0-gke.100"))
    assert len(objects_of_kind(objects, "AllowlistSynchronizer")) == 1


def test_one_workload_allowlist_api_alone_is_not_enough() -> None:
    for api in ("auto.gke.io/v1/AllowlistSynchronizer", "auto.gke.io/v1/WorkloadAllowlist"):
        objects = render({}, (f"--api-versions={api}", "--kube-version=1.33.0-gke.100"))
        assert objects_of_kind(objects, "AllowlistSynchronizer") == [], api


def test_legacy_api_on_a_new_cluster_with_workload_allowlists_is_the_new_generation() -> None:
    objects = render({}, (*AUTOPILOT_WORKLOAD_ALLOWLISTS, AUTOPILOT_LEGACY[0]))
    assert len(objects_of_kind(objects, "AllowlistSynchronizer")) == 1
    assert "storage-dir" in volumes_by_name(only(objects, "DaemonSet"))
