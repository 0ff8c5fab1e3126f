"""The chart and the image together: `helm install` on a real cluster.

The session starts a single-node cluster with its scheduler and
controller-manager (``scripts/e2e-cluster.sh up DIR --with-controllers``;
``E2E_HELM_ENV`` names the env file of one already running instead), a demo
agent on the node, and imports the driver's image, built from this checkout,
into the cluster's containerd (``scripts/e2e-driver-image.sh``). The release
is then installed with helm and only the values a user would set. A separate
package from ``tests/e2e``, whose cluster runs without controllers: pytest
tears that one down before this one starts, so only one cluster runs at a time.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e import session
from e2e.kube import DRIVER, Cluster, wait_for
from support.agent import DemoAgent
from support.report import report_line

REPO = session.REPO
IMAGE_SCRIPT = REPO / "scripts" / "e2e-driver-image.sh"
HELM = REPO / ".tools" / "bin" / "helm"
CHART = REPO / "charts" / "datadog-csi-driver"
RELEASE = "datadog-csi-driver"
RELEASE_NAMESPACE = "datadog-csi-driver"
# The chart names the DaemonSet after the chart, whatever the release name.
DAEMONSET = "datadog-csi-driver-node-server"
SECTION = "end-to-end results (helm)"


@pytest.fixture(scope="package")
def cluster_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    yield from session.cluster_env_with_controllers(request, "E2E_HELM_ENV", "e2eh-", SECTION)


@pytest.fixture(scope="package")
def cluster(cluster_env: dict[str, str]) -> Cluster:
    return session.cluster(cluster_env)


@pytest.fixture(scope="package")
def node_agent(cluster_env: dict[str, str]) -> Iterator[DemoAgent]:
    yield from session.node_agent(cluster_env)


@pytest.fixture(scope="package")
def driver_image(request: pytest.FixtureRequest, cluster_env: dict[str, str]) -> str:
    """The driver's image, built from this checkout, in the cluster's containerd."""
    began = time.monotonic()
    done = subprocess.run([str(IMAGE_SCRIPT), cluster_env["CLUSTER_DIR"]], text=True,
                          capture_output=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"{IMAGE_SCRIPT.name} failed:\n{done.stderr[-4000:]}", pytrace=False)
    image = next(line.split("=", 1)[1] for line in done.stdout.splitlines()
                 if line.startswith("DRIVER_IMAGE="))
    steps = next((line.split(": ", 1)[1] for line in reversed(done.stderr.splitlines())
                  if line.startswith("e2e-driver-image: ")), "")
    report_line(request.config, SECTION,
                f"driver image in the cluster in {time.monotonic() - began:.1f} s ({steps})")
    return image


@dataclass
class Helm:
    kubeconfig: str

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(HELM), *args], text=True, capture_output=True, timeout=timeout,
                              env={**os.environ, "KUBECONFIG": self.kubeconfig})
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="package")
def helm(cluster_env: dict[str, str]) -> Helm:
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} is missing; run scripts/install-helm.sh", pytrace=False)
    return Helm(cluster_env["KUBECONFIG"])


def user_values(image: str, kubelet_root: str, agent: DemoAgent) -> list[str]:
    """What a user sets on a node like this one: their image, the builtin
    registration (the sidecar's image cannot be pulled here), the kubelet's
    root directory, and where their agent's sockets are."""
    repository, _, tag = image.rpartition(":")
    values = {
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "registrar.mode": "builtin",
        "kubeletRootDir": kubelet_root,
        "sockets.dsdHostSocketPath": agent.dsd_path,
        "sockets.apmHostSocketPath": agent.apm_path,
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def daemonset_ready(cluster: Cluster, generation_after: int = 0) -> Any:
    """The DaemonSet when its current generation runs, updated and ready, on the node."""
    ds = cluster.apps.read_namespaced_daemon_set(DAEMONSET, RELEASE_NAMESPACE)
    status = ds.status
    if (ds.metadata.generation > generation_after
            and (status.observed_generation or 0) >= ds.metadata.generation
            and status.desired_number_scheduled == 1
            and (status.updated_number_scheduled or 0) == 1
            and (status.number_ready or 0) == 1
            and (status.number_unavailable or 0) == 0):
        return ds
    return None


def driver_pods(cluster: Cluster) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(
        RELEASE_NAMESPACE, label_selector=f"app={DAEMONSET}").items)


def describe_release(cluster: Cluster) -> str:
    return "; ".join(f"{p.metadata.name}: {cluster.describe(RELEASE_NAMESPACE, p.metadata.name)}"
                     for p in driver_pods(cluster))


@pytest.fixture(scope="package")
def release(request: pytest.FixtureRequest, cluster: Cluster, helm: Helm, driver_image: str,
            node_agent: DemoAgent) -> Iterator[list[str]]:
    """The chart installed with the user's values, its DaemonSet ready and the
    driver registered with the kubelet; uninstalled at the end if still there."""
    values = user_values(driver_image, cluster.kubelet_root, node_agent)
    began = time.monotonic()
    helm.run("install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
             *values)
    wait_for("the DaemonSet to be ready", lambda: daemonset_ready(cluster), timeout=180,
             describe=lambda: describe_release(cluster))
    ready = time.monotonic() - began
    wait_for("the kubelet to list the driver in the node's CSINode",
             lambda: DRIVER in cluster.csinode_drivers(), timeout=60,
             describe=lambda: describe_release(cluster))
    report_line(request.config, SECTION,
                f"helm install to DaemonSet ready in {ready:.1f} s, "
                f"to driver registered (CSINode) in {time.monotonic() - began:.1f} s")
    try:
        yield values
    finally:
        if helm.run("status", RELEASE, "--namespace", RELEASE_NAMESPACE, check=False).returncode == 0:
            helm.run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)


@pytest.fixture
def restricted(cluster: Cluster, release: list[str]) -> Iterator[str]:
    """A namespace enforcing the ``restricted`` Pod Security level, deleted
    afterwards (the controller-manager finishes the deletion)."""
    name = cluster.namespace("restricted", prefix="helm")
    yield name
    cluster.delete_namespace(name)
