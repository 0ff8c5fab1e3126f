"""The scan over a fake API: paging, forbidden lists, namespaces, exit codes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from csi_driver.check import resources
from csi_driver.check.paths import agent_sockets
from csi_driver.check.resources import Forbidden, Resource, Unreachable, list_pages
from csi_driver.check.scan import Options, scan

SOCKETS = agent_sockets("/var/run/datadog/dsd.socket", "/var/run/datadog/apm.socket")
ENFORCE = "pod-security.kubernetes.io/enforce"


class FakeApi:
    """Objects by resource; lists come in pages of ``page_size`` through list_pages, as the real
    client's do; ``forbidden`` holds (resource plural, namespace or None) that answer 403."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]], page_size: int = 2) -> None:
        self.objects = objects
        self.page_size = page_size
        self.forbidden: set[tuple[str, str | None]] = set()
        self.requests: list[tuple[str, str | None, str]] = []

    def _refuse(self, resource: Resource, namespace: str | None) -> None:
        if (resource.plural, namespace) in self.forbidden:
            raise Forbidden(f"forbidden: {resource.plural} in {namespace or 'the cluster'}")

    def list(self, resource: Resource, namespace: str | None = None, label_selector: str = "") -> list[dict]:
        self._refuse(resource, namespace)
        items = [copy.deepcopy(o) for o in self.objects.get(resource.kind, [])
                 if namespace is None or o["metadata"].get("namespace") == namespace]

        def page(token: str) -> dict[str, Any]:
            self.requests.append((resource.plural, namespace, token))
            start = int(token or 0)
            rest = start + self.page_size
            return {"items": items[start:rest], "metadata": {"continue": str(rest) if rest < len(items) else ""}}

        return list_pages(page)

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict | None:
        self._refuse(resource, namespace or name if resource.kind == "Namespace" else namespace)
        return next((copy.deepcopy(o) for o in self.objects.get(resource.kind, []) if o["metadata"]["name"] == name),
                    None)


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def deployment(ns: str, name: str, host_path: str | None, image: str = "app") -> dict[str, Any]:
    volumes = [{"name": "dd", "hostPath": {"path": host_path}}] if host_path else []
    mounts = [{"name": "dd", "mountPath": "/var/run/datadog"}] if host_path else []
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"template": {"metadata": {}, "spec": {
        "containers": [{"name": "c", "image": image, "volumeMounts": mounts}], "volumes": volumes}}}}


def cluster(*, installed: bool = False) -> dict[str, list[dict[str, Any]]]:
    objects: dict[str, list[dict[str, Any]]] = {
        "Namespace": [namespace("a", **{ENFORCE: "restricted"}), namespace("b"), namespace("c"),
                      namespace("datadog")],
        "Deployment": [deployment("a", f"web{i}", "/var/run/datadog") for i in range(5)]
                      + [deployment("b", "clean", None), deployment("c", "app", "/var/run/datadog")],
        "DaemonSet": [{**deployment("datadog", "agent", "/var/run/datadog", image="gcr.io/datadoghq/agent:7.60.0"),
                       "status": {}}],
        "Node": [{"metadata": {"name": "n1"}, "spec": {}}],
    }
    if installed:
        objects["CSIDriver"] = [{"metadata": {"name": "k8s.csi.datadoghq.com"}, "spec": {
            "attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "None",
            "volumeLifecycleModes": ["Ephemeral"]}}]
        objects["CSINode"] = [{"metadata": {"name": "n1"}, "spec": {"drivers": [{"name": "k8s.csi.datadoghq.com"}]}}]
        driver = deployment("datadog-csi-driver", "datadog-csi-driver-node-server", "/var/run/datadog",
                            image="registry.example.com/datadog-csi-driver:1")
        driver["spec"]["selector"] = {"matchLabels": {"app": "driver"}}
        driver["status"] = {"desiredNumberScheduled": 1, "numberReady": 1}
        objects["DaemonSet"].append(driver)
        objects["Pod"] = [{"metadata": {"name": "d", "namespace": "datadog-csi-driver", "labels": {"app": "driver"}},
                           "spec": {"nodeName": "n1"}, "status": {"conditions": [{"type": "Ready",
                                                                                   "status": "True"}]}}]
        objects["Namespace"].append(namespace("datadog-csi-driver"))
    return objects


def options(**changes: Any) -> Options:
    return Options(driver_name="k8s.csi.datadoghq.com", sockets=SOCKETS, **changes)


def names(report) -> list[tuple[str, str]]:
    return [(w.workload.namespace, w.workload.name) for w in report.workloads]


def test_every_namespace_with_cluster_wide_lists_in_pages():
    api = FakeApi(cluster())
    report = scan(api, options(check_installation=False))
    assert names(report) == [("a", f"web{i}") for i in range(5)] + [("c", "app")]
    assert report.exempt[0][1].startswith("the Datadog Agent (gcr.io/datadoghq/agent)")
    assert report.scanned == ["a", "b", "c", "datadog"]
    assert report.errors == [] and report.exit_code == 1
    # Five deployments in a: three pages of two, each asked with the previous page's token.
    assert [t for r, ns, t in api.requests if r == "deployments"] == ["", "2", "4", "6"]
    assert all(ns is None for r, ns, _t in api.requests if r != "namespaces")
    assert report.policies["a"].enforce.level == "restricted"
    assert report.workloads[0].verdict == "rejected" and report.workloads[-1].verdict == "allowed"


def test_a_forbidden_cluster_wide_list_is_made_again_per_namespace():
    api = FakeApi(cluster())
    api.forbidden = {(r.plural, None) for r in resources.WORKLOAD_RESOURCES} | {
        (r.plural, "c") for r in resources.WORKLOAD_RESOURCES}
    report = scan(api, options(check_installation=False))
    assert names(report) == [("a", f"web{i}") for i in range(5)]
    assert {(e.namespace, e.resource) for e in report.errors} == {("c", r.plural) for r in resources.WORKLOAD_RESOURCES}
    assert report.exit_code == 2


def test_without_the_namespace_list_a_cluster_wide_list_still_works():
    api = FakeApi(cluster())
    api.forbidden = {("namespaces", None)}
    report = scan(api, options(check_installation=False))
    assert [e.resource for e in report.errors] == ["namespaces"]
    assert len(report.workloads) == 6
    assert all(w.verdict == "unknown" for w in report.workloads)  # labels unreadable


def test_selected_namespaces_only():
    api = FakeApi(cluster())
    report = scan(api, options(namespaces=("c", "b"), check_installation=False))
    assert names(report) == [("c", "app")]
    assert report.scanned == ["b", "c"]
    assert {ns for _r, ns, _t in api.requests} == {"b", "c"}


def test_a_selected_namespace_that_does_not_exist_or_cannot_be_read():
    api = FakeApi(cluster())
    api.forbidden = {("namespaces", "a")}
    report = scan(api, options(namespaces=("a", "nope"), check_installation=False))
    assert [(e.namespace, e.message) for e in report.errors] == [("a", "forbidden: namespaces in a"),
                                                                 ("nope", "namespace not found")]
    # a's workloads are still listed; its Pod Security labels are unknown.
    assert len(report.workloads) == 5 and report.workloads[0].verdict == "unknown"


def test_an_unreachable_api_server_stops_the_scan():
    class Down(FakeApi):
        def list(self, *args: Any, **kwargs: Any) -> list[dict]:
            raise Unreachable("cannot reach the API server")

    with pytest.raises(Unreachable):
        scan(Down({}), options())


def test_exit_codes():
    clean = {"Namespace": [namespace("b")], "Deployment": [deployment("b", "clean", None)]}
    assert scan(FakeApi(clean), options(check_installation=False)).exit_code == 0
    # Nothing to replace, but the driver is not installed.
    assert scan(FakeApi(clean), options()).exit_code == 1
    installed = cluster(installed=True)
    installed["Deployment"] = [deployment("b", "clean", None)]
    report = scan(FakeApi(installed), options())
    assert report.installation is not None and report.installation.problems == 0
    assert report.exit_code == 0
    # The driver's own DaemonSet keeps its hostPath without being reported.
    assert [(w.kind, w.name) for w, _reason in report.exempt] == [("DaemonSet", "agent"),
                                                                  ("DaemonSet", "datadog-csi-driver-node-server")]
