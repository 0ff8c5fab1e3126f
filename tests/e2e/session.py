"""A cluster for one end-to-end package: started with ``scripts/e2e-cluster.sh``
(or one already running, named by an env file), the demo agent on its node,
and the API view of it. Shared by ``tests/e2e`` and ``tests/e2e_helm``, whose
package-scoped fixtures call these."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from e2e.kube import Cluster
from support.agent import DemoAgent
from support.report import report_line

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "e2e-cluster.sh"


def read_env(path: str) -> dict[str, str]:
    """``KEY=value`` lines of a cluster's env file (its ``CLUSTER_DIR`` among them)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cluster_env(request: pytest.FixtureRequest, given_env: str, prefix: str,
                up_args: Sequence[str], section: str, started_what: str) -> Iterator[dict[str, str]]:
    """The env of a running cluster: the file ``$given_env`` names, or a cluster
    started now (``e2e-cluster.sh up DIR *up_args``) and stopped once the
    package is done, whatever happened."""
    given = os.environ.get(given_env)
    if given:
        yield read_env(given)
        return
    # Short on purpose: the kubelet's registration socket lives below it, and
    # a Unix socket path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the cluster still goes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        began = time.monotonic()
        command = [str(CLUSTER_SCRIPT), "up", directory, *up_args]
        started = subprocess.run(command, text=True, capture_output=True, timeout=1800)
        if started.returncode != 0:
            pytest.fail(f"the e2e cluster did not start ({CLUSTER_SCRIPT.name} up {' '.join(up_args)}):\n"
                        f"{started.stdout}\n{started.stderr}", pytrace=False)
        report_line(request.config, section,
                    f"{started_what} up in {time.monotonic() - began:.1f} s")
        yield read_env(os.path.join(directory, "env"))
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "down", directory], timeout=600, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def cluster_env_with_controllers(request: pytest.FixtureRequest, given_env: str, prefix: str,
                                 section: str) -> Iterator[dict[str, str]]:
    """``cluster_env`` for suites that need kube-scheduler and kube-controller-manager:
    a cluster given in ``$given_env`` must run them too."""
    envs = cluster_env(request, given_env, prefix, ("--with-controllers",), section,
                       "cluster with kube-scheduler and kube-controller-manager")
    with contextlib.closing(envs):
        for env in envs:
            if env.get("WITH_CONTROLLERS") != "1":
                pytest.fail(f"{env['CLUSTER_DIR']}: the cluster runs without controllers "
                            "(up DIR --with-controllers)", pytrace=False)
            yield env


def cluster(env: dict[str, str]) -> Cluster:
    return Cluster(env["KUBECONFIG"], env["NODE_NAME"], env["KUBELET_ROOT"])


def node_agent(env: dict[str, str]) -> Iterator[DemoAgent]:
    """The agent on the node, in the cluster's directory; the directory is
    writable by everyone, so that only the driver's read-only mount keeps pods
    from changing it."""
    agent = DemoAgent(os.path.join(env["CLUSTER_DIR"], "agent", "datadog")).start()
    os.chmod(agent.directory, 0o777)
    yield agent
    agent.stop()
