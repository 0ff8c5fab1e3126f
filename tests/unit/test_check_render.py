"""The report as a table for an 80-column terminal, and as JSON and YAML."""

from __future__ import annotations

import json
from typing import Any

import yaml

from csi_driver.check import document, render
from csi_driver.check.paths import agent_sockets
from csi_driver.check.resources import Resource
from csi_driver.check.scan import Options, scan
from csi_driver.check.table import render as table
from csi_driver.check.table import wrap

SOCKETS = agent_sockets("/var/run/datadog/dsd.socket", "/var/run/datadog/apm.socket")


class Api:
    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    def list(self, resource: Resource, namespace: str | None = None, label_selector: str = "") -> list[dict]:
        return [o for o in self.objects.get(resource.kind, [])
                if namespace is None or o["metadata"].get("namespace") == namespace]

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict | None:
        return next((o for o in self.objects.get(resource.kind, []) if o["metadata"]["name"] == name), None)


def deployment(namespace: str, name: str, path: str, mount_path: str = "/var/run/datadog") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"template": {"metadata": {}, "spec": {
        "containers": [{"name": "app", "volumeMounts": [{"name": "dd", "mountPath": mount_path}]}],
        "volumes": [{"name": "dd", "hostPath": {"path": path}}]}}}}


def small_cluster() -> dict[str, list[dict[str, Any]]]:
    return {
        "Namespace": [{"metadata": {"name": "shop", "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}],
        "Deployment": [deployment("shop", "web", "/var/run/datadog"),
                       deployment("shop", "agentless", "/var/run", "/host/run")],
        "Node": [{"metadata": {"name": "node-1"}, "spec": {}}],
    }


def doc(objects: dict[str, list[dict[str, Any]]], patch: bool = False, **changes: Any) -> dict[str, Any]:
    report = scan(Api(objects), Options(driver_name="k8s.csi.datadoghq.com", sockets=SOCKETS, **changes))
    return document.build(report, with_patch=patch)


EXPECTED = """\
hostPath volumes reaching the agent's sockets
NAMESPACE  WORKLOAD              HOSTPATH          ADMISSION  REPLACE WITH
shop       deployment/agentless  /var/run          rejected   DSDSocketDirectory
shop       deployment/web        /var/run/datadog  rejected   DSDSocketDirectory

hostPath volumes reaching container runtime sockets (no CSI replacement)
NAMESPACE  WORKLOAD              HOSTPATH  ADMISSION  REACHES
shop       deployment/agentless  /var/run  rejected   docker.sock
                                                      containerd.sock
                                                      and 3 more

Pod Security labels of these namespaces
NAMESPACE  ENFORCE   WARN
shop       baseline  privileged (no label)
ADMISSION: what the namespace's Pod Security labels do to new pods of the
workload: rejected by its enforce level, warned by its warn level only, allowed,
or unknown (labels unreadable); --output json lists every violation.

Notes
shop deployment/agentless:
  - container app: the volume exposed /var/run at /host/run; the CSI volume
    holds only /var/run/datadog, so it is mounted at /host/run/datadog, where
    the socket was; the rest of /var/run is no longer visible
  - /var/run also exposes container runtime sockets; the CSI volume does not, so
    a container that uses them must keep a hostPath and cannot run under
    baseline

Installation not checked.

2 workloads with findings (2 agent socket volumes, 1 container runtime socket
volume), 0 read errors; exit code 1."""


def test_the_table():
    assert render.as_table(doc(small_cluster(), check_installation=False)) == EXPECTED


def test_long_names_wrap_within_80_columns():
    objects = small_cluster()
    long_ns = "a-namespace-with-a-rather-long-name-of-forty-five"
    objects["Namespace"].append({"metadata": {"name": long_ns, "labels": {}}})
    objects["Deployment"].append(deployment(long_ns, "a-deployment-named-at-length-by-a-generator-xyz",
                                            "/var/run/datadog/deeply/../dsd.socket", "/sock"))
    text = render.as_table(doc(objects, patch=True))
    # Every line but the commands, which are meant to be copied whole.
    assert max(len(line) for line in text.splitlines() if not line.startswith("kubectl ")) <= 80
    assert "a-deployment-named-at-" in text and "DSDSocket" in text
    assert "kubectl patch deployment a-deployment-named-at-length-by-a-generator-xyz -n " in text


def test_installation_and_errors_sections():
    text = render.as_table(doc(small_cluster()))
    assert "  FAIL  CSIDriver k8s.csi.datadoghq.com: not found" in text
    assert "node-1  not registered  none        -" in text
    assert text.endswith("3 installation problems, 0 read errors; exit code 1.")


def test_no_finding():
    objects = {"Namespace": [{"metadata": {"name": "a"}}]}
    text = render.as_table(doc(objects, check_installation=False))
    assert text.splitlines()[0] == "No workload reaches the agent's sockets through hostPath (1 namespace scanned)."
    assert text.endswith("exit code 0.")


def test_json_and_yaml_hold_the_same_document():
    built = doc(small_cluster(), patch=True)
    assert json.loads(render.as_json(built)) == built
    assert yaml.safe_load(render.as_yaml(built)) == built
    web = next(w for w in built["workloads"] if w["name"] == "web")
    assert web["podSecurity"]["enforce"]["violations"] == [
        {"check": "hostPathVolumes", "level": "baseline", "detail": 'hostPath volumes "dd"'}]
    assert web["patch"]["meetsAfter"] == "baseline"
    assert web["patch"]["command"].startswith("kubectl patch deployment web -n shop --type=json -p '[")


def test_without_patch_no_operations_are_printed():
    built = doc(small_cluster())
    assert all("patch" not in w for w in built["workloads"])
    assert "kubectl" not in render.as_table(built)


def test_wrap_prefers_spaces_then_slashes():
    assert wrap("the quick brown fox", 10) == ["the quick", "brown fox"]
    assert wrap("/var/run/datadog/dsd.socket", 12) == ["/var/run/", "datadog/", "dsd.socket"]
    assert wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert wrap("one two three four", 9, "  ") == ["one two", "  three", "  four"]


def test_table_cells_with_newlines_and_narrow_columns():
    lines = table(["A", "LONG"], [["x", "first\nsecond"], ["yy", "z" * 100]], width=30)
    assert lines[:3] == ["A   LONG", "x   first", "    second"]
    assert all(len(line) <= 30 for line in lines)


def test_a_volume_left_to_the_user_says_so_in_its_row():
    objects = small_cluster()
    shared = deployment("shop", "shared", "/var/run", "/dd")
    shared["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = "datadog"
    shared["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "dd", "mountPath": "/lock", "subPath": "lock"})
    built = doc(objects | {"Deployment": [shared, deployment("shop", "web", "/var/run/datadog")]}, patch=True,
                check_installation=False)
    rows = [line for line in render.as_table(built).splitlines() if line.startswith("shop ")]
    assert rows[0].endswith("by hand (notes)") and rows[1].endswith("DSDSocketDirectory")
    shared_doc = next(w for w in built["workloads"] if w["name"] == "shared")
    assert "patch" not in shared_doc and "holds neither agent socket" in shared_doc["patchBlocked"][0]
