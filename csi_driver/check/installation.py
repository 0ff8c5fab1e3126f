"""Is the driver installed so that pods on every node can use it?

Three things must hold: the CSIDriver object exists with the fields an inline
socket volume needs, the kubelet of every schedulable node lists the driver in
its CSINode (it registered), and the driver's DaemonSet runs a ready pod on
every such node. A node failing either of the last two is listed with why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

DAEMONSET_NAME = "datadog-csi-driver-node-server"
DAEMONSET_LABEL = ("app.kubernetes.io/name", "datadog-csi-driver")
# Tolerations the DaemonSet controller gives every DaemonSet pod.
_DAEMONSET_TOLERATIONS = tuple(
    {"key": f"node.kubernetes.io/{key}", "operator": "Exists", "effect": effect}
    for key, effect in (("not-ready", "NoExecute"), ("unreachable", "NoExecute"), ("disk-pressure", "NoSchedule"),
                        ("memory-pressure", "NoSchedule"), ("pid-pressure", "NoSchedule"),
                        ("unschedulable", "NoSchedule")))
# field -> (wanted value, why)
_CSIDRIVER_FIELDS = {
    "attachRequired": (False, "nothing is attached; true makes pods wait for an attachment that never comes"),
    "podInfoOnMount": (True, "the driver needs the pod's name and namespace"),
    "fsGroupPolicy": ("None", "the kubelet must never change ownership of the agent's socket directory"),
}


@dataclass(frozen=True)
class Item:
    subject: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class NodeGap:
    node: str
    registered: bool  # the node's CSINode lists the driver
    driver_pod: str  # ready | not ready | none
    reason: str


@dataclass(frozen=True)
class Installation:
    items: tuple[Item, ...]
    nodes_checked: int
    gaps: tuple[NodeGap, ...]

    @property
    def problems(self) -> int:
        return sum(not item.ok for item in self.items)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def check_csidriver(name: str, csidriver: Obj | None) -> Item:
    subject = f"CSIDriver {name}"
    if csidriver is None:
        return Item(subject, False, "not found: the kubelet refuses inline volumes of an unknown driver")
    spec = csidriver.get("spec") or {}
    wrong = [f"{field} is {spec.get(field)!r}, want {wanted!r} ({why})"
             for field, (wanted, why) in _CSIDRIVER_FIELDS.items() if spec.get(field) != wanted]
    modes = spec.get("volumeLifecycleModes") or ["Persistent"]
    if "Ephemeral" not in modes:
        wrong.append(f"volumeLifecycleModes {modes} lack Ephemeral: inline volumes are refused")
    if wrong:
        return Item(subject, False, "; ".join(wrong))
    return Item(subject, True, "attachRequired false, podInfoOnMount true, fsGroupPolicy None, "
                               f"modes {', '.join(modes)}")


def find_daemonsets(daemonsets: Iterable[Obj]) -> list[Obj]:
    """The driver's DaemonSets: by the chart's name or its app.kubernetes.io/name label."""
    key, value = DAEMONSET_LABEL
    return [ds for ds in daemonsets
            if _meta(ds).get("name") == DAEMONSET_NAME or (_meta(ds).get("labels") or {}).get(key) == value]


def tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        exists = toleration.get("operator", "Equal") == "Exists"
        if not toleration.get("key"):
            if exists:
                return True
            continue
        if toleration["key"] == taint.get("key") and (exists or toleration.get("value", "") == taint.get("value", "")):
            return True
    return False


def _untolerated(node: Obj, daemonset: Obj | None) -> list[str]:
    template = ((daemonset or {}).get("spec") or {}).get("template") or {}
    tolerations = [*((template.get("spec") or {}).get("tolerations") or []), *_DAEMONSET_TOLERATIONS]
    return [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}"
            for t in (node.get("spec") or {}).get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)]


def _ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _selects(selector: Obj, pod: Obj) -> bool:
    labels = _meta(pod).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pods_by_node(daemonset: Obj | None, pods: Iterable[Obj]) -> dict[str, str]:
    selector = (((daemonset or {}).get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    states: dict[str, str] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and _selects(selector, pod) and states.get(node) != "ready":
            states[node] = "ready" if _ready(pod) else "not ready"
    return states


def _registered(csinodes: Iterable[Obj], driver: str) -> set[str]:
    return {_meta(n).get("name", "") for n in csinodes
            if any(d.get("name") == driver for d in (n.get("spec") or {}).get("drivers") or [])}


def _daemonset_item(namespace: str, found: Sequence[Obj]) -> Item:
    if not found:
        return Item(f"DaemonSet in {namespace}", False,
                    f"none named {DAEMONSET_NAME} or labelled {'='.join(DAEMONSET_LABEL)}")
    status = found[0].get("status") or {}
    desired, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
    return Item(f"DaemonSet {namespace}/{_meta(found[0]).get('name')}", desired > 0 and ready == desired,
                f"{ready} of {desired} scheduled pods ready")


def check(driver: str, namespace: str, csidriver: Obj | None, nodes: Sequence[Obj], csinodes: Iterable[Obj],
          daemonsets: Iterable[Obj], pods: Iterable[Obj]) -> Installation:
    found = find_daemonsets(daemonsets)
    daemonset = found[0] if found else None
    schedulable = [n for n in nodes if not (n.get("spec") or {}).get("unschedulable")]
    registered = _registered(csinodes, driver)
    states = _pods_by_node(daemonset, pods)
    gaps = []
    for node in schedulable:
        name = _meta(node).get("name", "")
        state = states.get(name, "none")
        if name in registered and state == "ready":
            continue
        taints = _untolerated(node, daemonset)
        reason = f"taints the DaemonSet does not tolerate: {', '.join(taints)}" if taints else ""
        gaps.append(NodeGap(name, name in registered, state, reason))
    listed = sum(_meta(n).get("name") in registered for n in schedulable)
    items = (check_csidriver(driver, csidriver),
             Item("CSINode", listed == len(schedulable) and bool(schedulable),
                  f"the driver is registered on {listed} of {len(schedulable)} schedulable nodes"),
             _daemonset_item(namespace, found))
    return Installation(items, len(schedulable), tuple(gaps))
