"""``--patch`` on the real API server: applied with the client, workloads whose
pods Pod Security refused get them admitted; every patch the report offers
yields a pod template that the level it claims admits (server-side dry run),
and that the next stricter level still refuses."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from e2e.kube import wait_for
from e2e_check.scenario import (
    DRY_RUN,
    ENFORCE,
    SCENARIO_NAMESPACES,
    WARN,
    CheckCluster,
    create,
    create_namespace,
    restricted_workloads,
)
from support import jsonpatch

SCOPE = [arg for namespace in SCENARIO_NAMESPACES for arg in ("-n", namespace)]
TEMPLATE_POINTERS = {"Deployment": "/spec/template", "StatefulSet": "/spec/template", "DaemonSet": "/spec/template",
                     "ReplicaSet": "/spec/template", "Job": "/spec/template",
                     "CronJob": "/spec/jobTemplate/spec/template"}


def _functions(cluster: CheckCluster, kind: str) -> tuple[Any, Any]:
    """(read, patch) of the kind's API, by name and namespace."""
    api, snake = {
        "Deployment": (cluster.apps, "deployment"), "StatefulSet": (cluster.apps, "stateful_set"),
        "DaemonSet": (cluster.apps, "daemon_set"), "ReplicaSet": (cluster.apps, "replica_set"),
        "Job": (cluster.batch, "job"), "CronJob": (cluster.batch, "cron_job"), "Pod": (cluster.core, "pod"),
    }[kind]
    return getattr(api, f"read_namespaced_{snake}"), getattr(api, f"patch_namespaced_{snake}")


def _raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    reply = call(*args, _preload_content=False, **kwargs)
    document: dict[str, Any] = json.loads(reply.data)
    return document


def _patched_object(cluster: CheckCluster, workload: dict[str, Any]) -> dict[str, Any]:
    """The object as the patch leaves it: patched by the API server (dry run) where it can be,
    else the manifest patched here, as the report tells users to do."""
    read, patch = _functions(cluster, workload["kind"])
    name, namespace, ops = workload["name"], workload["namespace"], workload["patch"]["operations"]
    if workload["kind"] in ("Job", "Pod"):
        return jsonpatch.apply(_raw(read, name, namespace), ops)
    return _raw(patch, name, namespace, ops, dry_run="All")


def _template(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    if kind == "Pod":
        return {"metadata": {"labels": obj["metadata"].get("labels", {})}, "spec": obj["spec"]}
    node: Any = obj
    for part in TEMPLATE_POINTERS[kind].strip("/").split("/"):
        node = node[part]
    return node


def _admitted(cluster: CheckCluster, namespace: str, template: dict[str, Any]) -> str:
    """"" when the namespace admits a pod of the template (server-side dry run), else the refusal."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "dry-run-", "labels": template["metadata"].get("labels", {})},
           "spec": template["spec"]}
    try:
        cluster.core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as err:
        if err.status == 403:
            return json.loads(err.body)["message"]
        raise
    return ""


def test_every_offered_patch_meets_the_level_it_claims(check, scenario):
    report = check(*SCOPE, "--patch", "-o", "json").json()
    offered = [w for w in report["workloads"] if "patch" in w]
    assert {(w["kind"], w["name"]) for w in offered} >= {("Job", "migrate"), ("CronJob", "report"),
                                                         ("StatefulSet", "queue"), ("Deployment", "web")}
    for workload in offered:
        template = _template(workload["kind"], _patched_object(scenario, workload))
        assert not [v for v in template["spec"]["volumes"] if "hostPath" in v and v["name"] in
                    {f["volume"] for f in workload["agentSockets"]}]
        level = workload["patch"]["meetsAfter"]
        where = f"{workload['namespace']}/{workload['kind']}/{workload['name']}"
        assert level in DRY_RUN, f"{where}: a patch that leaves the template privileged"
        assert _admitted(scenario, DRY_RUN[level], template) == "", where
        if level == "baseline":
            refusal = _admitted(scenario, DRY_RUN["restricted"], template)
            assert "violates PodSecurity" in refusal, where
            for violation in workload["patch"]["remaining"]:
                assert violation["check"] in ("allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile",
                                              "capabilities", "runAsUser", "restrictedVolumes"), where


def test_applied_patches_get_refused_pods_admitted(check, scenario):
    """The restricted namespace refuses the pods of three workloads; their patches,
    applied with the client, let the controllers create them."""
    namespace = f"chk-patch-{uuid.uuid4().hex[:6]}"
    create_namespace(scenario, namespace, {ENFORCE: "restricted", WARN: "restricted"})
    workloads = restricted_workloads()
    for kind, body in workloads:
        create(scenario, namespace, kind, body)
    before = check("-n", namespace, "--patch", "-o", "json", "--skip-installation")
    assert before.code == 1, before.err
    found = before.json()["workloads"]
    assert sorted((w["kind"], w["name"]) for w in found) == sorted((k, b["metadata"]["name"]) for k, b in workloads)
    for workload in found:
        assert workload["podSecurity"]["admission"] == "rejected"
        assert workload["patch"]["meetsAfter"] == "restricted"
        assert workload["pods"] == 0
        _read, patch = _functions(scenario, workload["kind"])
        patch(workload["name"], namespace, workload["patch"]["operations"])
    for _kind, body in workloads:
        app = body["metadata"]["name"]
        pods = wait_for(f"a pod of {namespace}/{app} admitted", lambda a=app: scenario.core.list_namespaced_pod(
            namespace, label_selector=f"app={a}").items, timeout=90)
        volumes = {v.name: v for v in pods[0].spec.volumes}
        assert not [v for v in volumes.values() if v.host_path is not None]
        assert {v.csi.volume_attributes["type"] for v in volumes.values() if v.csi} <= {
            "DSDSocketDirectory", "APMSocketDirectory", "DSDSocket", "APMSocket"}
    after = check("-n", namespace, "-o", "json", "--skip-installation")
    assert after.code == 0, after.out
    assert after.json()["workloads"] == []


def test_a_patch_of_a_changed_object_fails_as_a_whole(check, scenario):
    """The test operations guard the indices: an object changed since the check is left alone."""
    namespace = f"chk-stale-{uuid.uuid4().hex[:6]}"
    create_namespace(scenario, namespace, {ENFORCE: "restricted"})
    kind, body = restricted_workloads()[0]
    create(scenario, namespace, kind, body)
    ops = check("-n", namespace, "--patch", "-o", "json", "--skip-installation").json()[
        "workloads"][0]["patch"]["operations"]
    read, patch = _functions(scenario, kind)
    name = body["metadata"]["name"]
    patch(name, namespace, [{"op": "add", "path": "/spec/template/spec/volumes/0",
                             "value": {"name": "scratch", "emptyDir": {}}}])
    with pytest.raises(ApiException) as refused:
        patch(name, namespace, ops)
    assert refused.value.status == 422
    assert _raw(read, name, namespace)["spec"]["template"]["spec"]["volumes"][1]["hostPath"]
