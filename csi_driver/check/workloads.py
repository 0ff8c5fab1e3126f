"""Workloads: the objects whose pod templates decide what runs.

A Pod is reported through the workload that owns it (ReplicaSets through their
Deployment, Jobs through their CronJob), once, however many replicas run. The
workloads themselves are judged by their templates, so a Deployment whose pods
are all refused by admission, or scaled to zero, is still found. A Pod whose
owner is of another kind (or could not be read) stands for that owner; a Pod
without an owner stands for itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

# kind -> JSON pointer of its pod template ("" : the object is the pod)
TEMPLATE_POINTERS = {
    "Deployment": "/spec/template",
    "StatefulSet": "/spec/template",
    "DaemonSet": "/spec/template",
    "ReplicaSet": "/spec/template",
    "Job": "/spec/template",
    "CronJob": "/spec/jobTemplate/spec/template",
    "Pod": "",
}
KINDS = tuple(TEMPLATE_POINTERS)
# Kinds that are reported through their owner of the given kind.
_REPORTED_THROUGH = {"ReplicaSet": "Deployment", "Job": "CronJob"}
# Templates that cannot be changed once the object exists.
IMMUTABLE_TEMPLATES = frozenset({"Job", "Pod"})


@dataclass(frozen=True)
class Workload:
    namespace: str
    kind: str
    name: str
    template: Obj  # {"metadata": ..., "spec": ...}
    template_pointer: str | None  # where the template is in the object; None: not in a readable object
    pods: int = 0
    labels: Obj = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.kind, self.name)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _controller(obj: Obj) -> tuple[str, str] | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return (ref.get("kind", ""), ref.get("name", ""))
    return None


def _template(kind: str, obj: Obj) -> Obj:
    if kind == "Pod":
        return {"metadata": _meta(obj), "spec": obj.get("spec") or {}}
    node: Any = obj
    for part in TEMPLATE_POINTERS[kind].strip("/").split("/"):
        node = (node or {}).get(part)
    return node or {}


def _key(kind: str, obj: Obj) -> tuple[str, str, str]:
    meta = _meta(obj)
    return (meta.get("namespace", ""), kind, meta.get("name", ""))


def _top_owner(index: Mapping[tuple[str, str, str], Obj], key: tuple[str, str, str]) -> tuple[str, str, str]:
    """The key a listed object is reported under: itself, or its Deployment/CronJob."""
    namespace, kind, _name = key
    owner = _controller(index[key])
    if owner and _REPORTED_THROUGH.get(kind) == owner[0] and (namespace, *owner) in index:
        return (namespace, *owner)
    return key


def collect(objects: Mapping[str, Iterable[Obj]]) -> list[Workload]:
    """Workloads from listed objects by kind (``Pod`` among them), sorted."""
    index = {_key(kind, obj): obj for kind, listed in objects.items() if kind != "Pod" for obj in listed}
    reported = {key for key in index if _top_owner(index, key) == key}
    pods: dict[tuple[str, str, str], int] = {}
    orphans: dict[tuple[str, str, str], Obj] = {}
    for pod in objects.get("Pod", ()):
        namespace = _meta(pod).get("namespace", "")
        owner = _controller(pod)
        key = (namespace, *owner) if owner else _key("Pod", pod)
        if key in index:
            key = _top_owner(index, key)
        else:
            orphans.setdefault(key, pod)
        pods[key] = pods.get(key, 0) + 1
    found = [Workload(*key, template=_template(key[1], index[key]), template_pointer=TEMPLATE_POINTERS[key[1]],
                      pods=pods.get(key, 0), labels=_meta(index[key]).get("labels") or {})
             for key in reported]
    found += [Workload(*key, template=_template("Pod", pod),
                       template_pointer="" if key[1] == "Pod" else None, pods=pods[key],
                       labels=_meta(pod).get("labels") or {})
              for key, pod in orphans.items()]
    return sorted(found, key=lambda w: (w.namespace, _kind_order(w.kind), w.name))


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)
