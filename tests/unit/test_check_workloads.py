"""Pods reported through the workload that owns them, once."""

from __future__ import annotations

from typing import Any

from csi_driver.check.workloads import collect


def obj(name: str, namespace: str = "apps", owner: tuple[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner:
        meta["ownerReferences"] = [{"kind": "Other", "name": "x"},  # not the controller: ignored
                                   {"kind": owner[0], "name": owner[1], "controller": True}]
    return {"metadata": meta, "spec": spec}


def tmpl(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": image}}, "spec": {"containers": [{"name": "c", "image": image}]}}


def keys(found) -> list[tuple[str, str, str, int]]:
    return [(w.namespace, w.kind, w.name, w.pods) for w in found]


def test_replicas_are_counted_under_the_deployment():
    found = collect({
        "Deployment": [obj("web", template=tmpl("web"))],
        "ReplicaSet": [obj("web-1", owner=("Deployment", "web"), template=tmpl("web")),
                       obj("web-2", owner=("Deployment", "web"), template=tmpl("web-old"))],
        "Pod": [obj(f"web-1-{i}", owner=("ReplicaSet", "web-1")) for i in range(3)]
               + [obj("web-2-a", owner=("ReplicaSet", "web-2"))],
    })
    assert keys(found) == [("apps", "Deployment", "web", 4)]
    assert found[0].template == tmpl("web")
    assert found[0].template_pointer == "/spec/template"


def test_jobs_are_counted_under_their_cronjob():
    cron = obj("nightly", jobTemplate={"spec": {"template": tmpl("n")}})
    found = collect({"CronJob": [cron], "Job": [obj("nightly-1", owner=("CronJob", "nightly"), template=tmpl("n"))],
                     "Pod": [obj("nightly-1-x", owner=("Job", "nightly-1"))]})
    assert keys(found) == [("apps", "CronJob", "nightly", 1)]
    assert found[0].template_pointer == "/spec/jobTemplate/spec/template"
    assert found[0].template == tmpl("n")


def test_objects_without_a_listed_owner_stand_for_themselves():
    found = collect({
        "ReplicaSet": [obj("alone", template=tmpl("a"))],
        "Job": [obj("once", template=tmpl("o")), obj("lost", owner=("CronJob", "gone"), template=tmpl("l"))],
        "Pod": [obj("bare", containers=[{"name": "c"}], volumes=[]),
                obj("ctl-1", owner=("ReplicationController", "ctl"), containers=[{"name": "c"}]),
                obj("ctl-2", owner=("ReplicationController", "ctl"), containers=[{"name": "c"}])],
    })
    assert keys(found) == [("apps", "ReplicaSet", "alone", 0), ("apps", "Job", "lost", 0),
                           ("apps", "Job", "once", 0), ("apps", "Pod", "bare", 1),
                           ("apps", "ReplicationController", "ctl", 2)]
    by_name = {w.name: w for w in found}
    assert by_name["bare"].template_pointer == "" and by_name["bare"].template["spec"]["containers"]
    # The owner could not be read: judged by its pod's spec, with nothing to patch.
    assert by_name["ctl"].template_pointer is None


def test_the_same_name_in_two_namespaces_is_two_workloads():
    found = collect({"Deployment": [obj("web", "a", template=tmpl("x")), obj("web", "b", template=tmpl("x"))],
                     "ReplicaSet": [obj("web-1", "b", owner=("Deployment", "web"), template=tmpl("x"))],
                     "Pod": [obj("web-1-x", "b", owner=("ReplicaSet", "web-1"))]})
    assert keys(found) == [("a", "Deployment", "web", 0), ("b", "Deployment", "web", 1)]
