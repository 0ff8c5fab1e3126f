"""`datadog-csi-driver check` against a real API server.

The package starts a single-node cluster with its scheduler and
controller-manager (``scripts/e2e-cluster.sh up DIR --with-controllers``;
``E2E_CHECK_ENV`` names the env file of one already running instead), so that
Deployments, CronJobs and the rest create their ReplicaSets, Jobs and Pods as
on any cluster, and Pod Security admission refuses what it refuses. The
scenario (``scenario.py``) is created once; the check runs as users run it:
the console script's module in a subprocess, with a kubeconfig.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e import session
from e2e_check.scenario import CheckCluster, set_up

SECTION = "end-to-end results (check)"


@pytest.fixture(scope="package")
def cluster_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    yield from session.cluster_env_with_controllers(request, "E2E_CHECK_ENV", "e2ec-", SECTION)


@pytest.fixture(scope="package")
def cluster(cluster_env: dict[str, str]) -> CheckCluster:
    return CheckCluster(cluster_env["KUBECONFIG"], cluster_env["NODE_NAME"], cluster_env["KUBELET_ROOT"])


@pytest.fixture(scope="package")
def scenario(cluster: CheckCluster) -> CheckCluster:
    set_up(cluster)
    return cluster


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


def run_check(kubeconfig: str, *args: str) -> Run:
    """The check as a user runs it; no DD_* variable of this environment leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_") and k != "KUBECONFIG"}
    done = subprocess.run([sys.executable, "-m", "csi_driver", "check", "--kubeconfig", kubeconfig, *args],
                          text=True, capture_output=True, timeout=300, env=env)
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="package")
def check(scenario: CheckCluster):
    """``check(*args)`` as the cluster's admin."""
    return lambda *args: run_check(scenario.kubeconfig, *args)
