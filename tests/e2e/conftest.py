"""The end-to-end suite: a real kube-apiserver and kubelet on this machine.

The session starts a single-node cluster with ``scripts/e2e-cluster.sh up``
(unless ``E2E_ENV`` names the env file of one already running), a demo agent,
and the driver as a process on the node that registers itself with the kubelet
(``--kubelet-registration-path``), then installs the CSIDriver object. Every
test drives the cluster through the API server with the ``kubernetes`` client.
The cluster is stopped when the suite's last test is done, whatever happened
(``scripts/e2e-cluster.sh down``), before any other suite runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e import session
from e2e.kube import DRIVER, Cluster, wait_for
from support.agent import DemoAgent
from support.driver import DriverProcess, free_port

CLUSTER_SCRIPT = session.CLUSTER_SCRIPT
K8S_VERSION = "v1.35.4"
# What the chart's ClusterRole allows the driver: posting events on pods.
DRIVER_RULES = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
STALE_CHECK_INTERVAL = "2s"


@pytest.fixture(scope="package")
def cluster_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    yield from session.cluster_env(
        request, "E2E_ENV", "e2e-", (), "end-to-end results",
        f"cluster (etcd, kube-apiserver and kubelet {K8S_VERSION}, containerd)")


@pytest.fixture(scope="package")
def cluster(cluster_env: dict[str, str]) -> Cluster:
    return session.cluster(cluster_env)


@pytest.fixture(scope="package")
def node_agent(cluster_env: dict[str, str]) -> Iterator[DemoAgent]:
    yield from session.node_agent(cluster_env)


@pytest.fixture(scope="package")
def node_driver(cluster: Cluster, cluster_env: dict[str, str],
                node_agent: DemoAgent) -> Iterator[DriverProcess]:
    """The driver on the node, registered with the real kubelet by itself, and
    posting pod events with the chart's permissions and nothing more."""
    workdir = os.path.join(cluster_env["CLUSTER_DIR"], "driver")
    os.makedirs(workdir, exist_ok=True)
    driver = DriverProcess(workdir=workdir, kubelet_root=cluster.kubelet_root,
                           dsd_path=node_agent.dsd_path, apm_path=node_agent.apm_path,
                           metrics_port=free_port())
    kubeconfig = cluster.service_account_kubeconfig(
        os.path.join(workdir, "events.kubeconfig"), cluster_env["APISERVER"], cluster_env["CA_CERT"],
        "datadog-csi-driver", "datadog-csi-driver-node-server", DRIVER_RULES)
    driver.extra_args = ["--kubelet-registration-path", driver.socket_path, "--log-level", "debug",
                         "--stale-check-interval", STALE_CHECK_INTERVAL, "--kubeconfig", kubeconfig]
    try:
        driver.start()
        cluster.install_csidriver()
        wait_for("the kubelet to register the driver (CSINode)",
                 lambda: DRIVER in cluster.csinode_drivers(), timeout=60,
                 describe=lambda: driver.logs()[-2000:])
        yield driver
    finally:
        driver.stop()


@pytest.fixture
def restricted(cluster: Cluster, node_driver: DriverProcess) -> Iterator[str]:
    """A namespace enforcing the ``restricted`` Pod Security level, removed afterwards."""
    name = cluster.namespace("restricted")
    yield name
    cluster.delete_namespace(name)
