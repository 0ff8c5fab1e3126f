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
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.kube import DRIVER, Cluster, wait_for
from support.agent import DemoAgent
from support.driver import DriverProcess, free_port
from support.report import report_line

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "e2e-cluster.sh"
K8S_VERSION = "v1.35.4"


def _read_env(path: str) -> dict[str, str]:
    values = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip().strip('"')
    return values


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="package")
def cluster_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    given = os.environ.get("E2E_ENV")
    if given:
        yield _read_env(given)
        return
    # Short on purpose: the kubelet's registration socket lives below it, and
    # a Unix socket path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="e2e-", dir="/tmp")
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the cluster still goes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        began = time.monotonic()
        started = subprocess.run([str(CLUSTER_SCRIPT), "up", directory], text=True,
                                 capture_output=True, timeout=1800)
        if started.returncode != 0:
            pytest.fail(f"the e2e cluster did not start ({CLUSTER_SCRIPT.name} up):\n"
                        f"{started.stdout}\n{started.stderr}", pytrace=False)
        report_line(request.config, "end-to-end results",
                    f"cluster (etcd, kube-apiserver and kubelet {K8S_VERSION}, containerd) up in "
                    f"{time.monotonic() - began:.1f} s")
        yield {**_read_env(os.path.join(directory, "env")), "E2E_DIR": directory}
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "down", directory], timeout=600, check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="package")
def cluster(cluster_env: dict[str, str]) -> Cluster:
    return Cluster(cluster_env["KUBECONFIG"], cluster_env["NODE_NAME"], cluster_env["KUBELET_ROOT"])


@pytest.fixture(scope="package")
def node_agent(cluster_env: dict[str, str]) -> Iterator[DemoAgent]:
    """The agent on the node; its directory is writable by everyone, so that only
    the driver's read-only mount keeps pods from changing it."""
    base = cluster_env.get("E2E_DIR") or tempfile.mkdtemp(prefix="e2e-agent-", dir="/tmp")
    agent = DemoAgent(os.path.join(base, "agent", "datadog")).start()
    os.chmod(agent.directory, 0o777)
    yield agent
    agent.stop()


@pytest.fixture(scope="package")
def node_driver(cluster: Cluster, cluster_env: dict[str, str],
                node_agent: DemoAgent) -> Iterator[DriverProcess]:
    """The driver on the node, registered with the real kubelet by itself."""
    workdir = os.path.join(cluster_env.get("E2E_DIR") or tempfile.mkdtemp(dir="/tmp"), "driver")
    os.makedirs(workdir, exist_ok=True)
    driver = DriverProcess(workdir=workdir, kubelet_root=cluster.kubelet_root,
                           dsd_path=node_agent.dsd_path, apm_path=node_agent.apm_path,
                           metrics_port=free_port())
    driver.extra_args = ["--kubelet-registration-path", driver.socket_path, "--log-level", "debug"]
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
