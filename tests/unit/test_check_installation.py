"""The installation checks on constructed API objects."""

from __future__ import annotations

from typing import Any

import pytest

from csi_driver.check.installation import check, check_csidriver, tolerates

DRIVER = "k8s.csi.datadoghq.com"
GOOD = {"attachRequired": False, "podInfoOnMount": True, "fsGroupPolicy": "None",
        "volumeLifecycleModes": ["Ephemeral", "Persistent"]}


def node(name: str, unschedulable: bool = False, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable, "taints": taints or []}}


def csinode(name: str, *drivers: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"drivers": [{"name": d} for d in drivers] or None}}


def daemonset(name: str = "datadog-csi-driver-node-server", labels: dict[str, str] | None = None,
              tolerations: list[dict[str, str]] | None = None, desired: int = 2, ready: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"selector": {"matchLabels": {"app": "driver"}},
                     "template": {"spec": {"tolerations": tolerations or []}}},
            "status": {"desiredNumberScheduled": desired, "numberReady": ready}}


def pod(node_name: str, ready: bool = True, app: str = "driver") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}}, "spec": {"nodeName": node_name},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_a_good_csidriver():
    item = check_csidriver(DRIVER, {"spec": GOOD})
    assert item.ok and item.detail == ("attachRequired false, podInfoOnMount true, fsGroupPolicy None, "
                                       "modes Ephemeral, Persistent")


@pytest.mark.parametrize(("change", "said"), [
    ({"attachRequired": True}, "attachRequired is True, want False"),
    ({"podInfoOnMount": False}, "podInfoOnMount is False, want True"),
    ({"fsGroupPolicy": "File"}, "fsGroupPolicy is 'File', want 'None'"),
    ({"volumeLifecycleModes": ["Persistent"]}, "lack Ephemeral"),
    ({"volumeLifecycleModes": None}, "lack Ephemeral"),  # the API's default is Persistent only
])
def test_each_wrong_csidriver_field_is_named(change, said):
    item = check_csidriver(DRIVER, {"spec": {**GOOD, **change}})
    assert not item.ok and said in item.detail


def test_a_missing_csidriver():
    assert not check_csidriver(DRIVER, None).ok


def test_all_good_on_every_schedulable_node():
    found = check(DRIVER, "ns", {"spec": GOOD}, [node("a"), node("b"), node("cordoned", unschedulable=True)],
                  [csinode("a", DRIVER), csinode("b", "other", DRIVER), csinode("cordoned")],
                  [daemonset()], [pod("a"), pod("b")])
    assert found.problems == 0 and found.gaps == () and found.nodes_checked == 2


def test_nodes_without_the_driver_are_listed_with_why():
    nodes = [node("a"), node("b"), node("c", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                                                     {"key": "soft", "effect": "PreferNoSchedule"}])]
    found = check(DRIVER, "ns", {"spec": GOOD}, nodes, [csinode("a", DRIVER), csinode("b")],
                  [daemonset(desired=2, ready=1)], [pod("a"), pod("b", ready=False), pod("c", app="other")])
    assert [(g.node, g.registered, g.driver_pod, g.reason) for g in found.gaps] == [
        ("b", False, "not ready", ""),
        ("c", False, "none", "taints the DaemonSet does not tolerate: gpu=yes:NoSchedule")]
    items = {i.subject: i for i in found.items}
    assert items["CSINode"].detail == "the driver is registered on 1 of 3 schedulable nodes"
    assert items["DaemonSet ns/datadog-csi-driver-node-server"].detail == "1 of 2 scheduled pods ready"
    assert found.problems == 2


def test_the_daemonset_is_found_by_its_label_too():
    labelled = daemonset(name="custom", labels={"app.kubernetes.io/name": "datadog-csi-driver"})
    found = check(DRIVER, "ns", {"spec": GOOD}, [node("a")], [csinode("a", DRIVER)],
                  [daemonset(name="unrelated"), labelled], [pod("a")])
    assert [i.subject for i in found.items][2] == "DaemonSet ns/custom"
    nothing = check(DRIVER, "ns", {"spec": GOOD}, [node("a")], [csinode("a", DRIVER)], [daemonset("x")], [])
    assert not nothing.items[2].ok and "none named" in nothing.items[2].detail


@pytest.mark.parametrize(("toleration", "tolerated"), [
    ({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}, True),
    ({"key": "gpu", "value": "yes"}, True),  # every effect
    ({"key": "gpu", "operator": "Exists"}, True),
    ({"operator": "Exists"}, True),  # every taint
    ({"key": "gpu", "value": "no"}, False),
    ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "other", "operator": "Exists"}, False),
])
def test_tolerations(toleration, tolerated):
    assert tolerates([toleration], {"key": "gpu", "value": "yes", "effect": "NoSchedule"}) is tolerated


def test_the_daemonset_controllers_own_tolerations_count():
    cordoned_taint = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    found = check(DRIVER, "ns", {"spec": GOOD}, [node("a", taints=cordoned_taint)], [csinode("a")],
                  [daemonset()], [])
    assert found.gaps[0].reason == ""
