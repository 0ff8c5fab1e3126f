"""A read-only user (a ServiceAccount token, get and list only) gets the
admin's report; one that may not read a namespace gets the rest of the report,
that namespace named, and exit code 2."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e_check.conftest import run_check
from e2e_check.scenario import CheckCluster, create_namespace

READ = ["get", "list"]
CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["namespaces", "nodes"], "verbs": READ},
    {"apiGroups": ["storage.k8s.io"], "resources": ["csidrivers", "csinodes"], "verbs": READ},
]
WORKLOAD_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": READ},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": READ},
]
WORKLOAD_RESOURCES = ["pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"]


def _token_kubeconfig(cluster: CheckCluster, env: dict[str, str], namespace: str, account: str,
                      directory: Path) -> str:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    token = cluster.core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = directory / f"{account}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "reader",
        "clusters": [{"name": "e2e", "cluster": {"server": env["APISERVER"], "certificate-authority": env["CA_CERT"]}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "e2e", "user": account}}],
    }))
    return str(kubeconfig)


def _subject(namespace: str, account: str) -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]


def _cluster_role(cluster: CheckCluster, name: str, rules: list[dict[str, Any]]) -> None:
    cluster.rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})


def _bind_cluster_wide(cluster: CheckCluster, role: str, subjects: list[dict[str, Any]]) -> None:
    cluster.rbac.create_cluster_role_binding({
        "metadata": {"name": f"{role}-{uuid.uuid4().hex[:6]}"}, "subjects": subjects,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}})


@pytest.fixture(scope="module")
def accounts(scenario: CheckCluster, cluster_env: dict[str, str], tmp_path_factory) -> dict[str, str]:
    """Kubeconfigs of two ServiceAccounts: ``reader`` may get and list everything the check
    reads; ``partial`` may read every namespace but chk-hidden."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"chk-rbac-{suffix}"
    create_namespace(scenario, namespace, {})
    directory = tmp_path_factory.mktemp("rbac")
    everything, cluster_only, workloads = (f"chk-{kind}-{suffix}" for kind in ("read-all", "cluster", "workloads"))
    _cluster_role(scenario, everything, CLUSTER_RULES + WORKLOAD_RULES)
    _cluster_role(scenario, cluster_only, CLUSTER_RULES)
    _cluster_role(scenario, workloads, WORKLOAD_RULES)
    _bind_cluster_wide(scenario, everything, _subject(namespace, "reader"))
    _bind_cluster_wide(scenario, cluster_only, _subject(namespace, "partial"))
    for ns in scenario.core.list_namespace().items:
        if ns.metadata.name != "chk-hidden":
            scenario.rbac.create_namespaced_role_binding(ns.metadata.name, {
                "metadata": {"name": f"check-reader-{suffix}"}, "subjects": _subject(namespace, "partial"),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": workloads}})
    return {name: _token_kubeconfig(scenario, cluster_env, namespace, name, directory)
            for name in ("reader", "partial")}


def test_a_read_only_user_gets_the_admins_report(check, accounts):
    admin = check("-o", "json", "--patch")
    reader = run_check(accounts["reader"], "-o", "json", "--patch")
    assert (reader.code, admin.code) == (1, 1), reader.err
    assert reader.json() == admin.json()


def test_a_forbidden_namespace_is_reported_and_the_rest_scanned(check, accounts):
    admin = check("-o", "json", "--skip-installation").json()
    partial = run_check(accounts["partial"], "-o", "json", "--skip-installation")
    assert partial.code == 2, partial.err
    report = partial.json()
    assert {(e["namespace"], e["resource"]) for e in report["errors"]} == {
        ("chk-hidden", resource) for resource in WORKLOAD_RESOURCES}
    assert all(e["message"].startswith("forbidden: ") for e in report["errors"])
    assert report["workloads"] == [w for w in admin["workloads"] if w["namespace"] != "chk-hidden"]
    assert [w for w in admin["workloads"] if w["namespace"] == "chk-hidden"]
    table = run_check(accounts["partial"], "--skip-installation")
    assert table.code == 2
    # The table wraps long lines at spaces: compare with single spaces.
    assert f"namespace chk-hidden: {', '.join(WORKLOAD_RESOURCES)}: forbidden" in " ".join(table.out.split())


def test_a_user_who_may_read_only_one_namespace_checks_it(check, accounts):
    """No cluster-wide list at all: -n with the namespace the user may read."""
    admin = check("-n", "chk-baseline", "-o", "json", "--skip-installation").json()
    partial = run_check(accounts["partial"], "-n", "chk-baseline", "-o", "json", "--skip-installation")
    assert partial.code == 1, partial.out
    assert partial.json() == admin
