"""Replacement plans and the JSON patches built from them.

Every patch is applied with an RFC 6902 implementation written independently
(tests/support/jsonpatch.py) and must give the template the check itself
judges afterwards; the real API server applies them in tests/e2e_check.
"""

from __future__ import annotations

import copy
import json
import shlex
from typing import Any

import pytest

from csi_driver.check import patches
from csi_driver.check.paths import agent_sockets
from csi_driver.check.replacement import Plan, plan
from csi_driver.check.workloads import Workload
from support import jsonpatch

DRIVER = "k8s.csi.datadoghq.com"
SOCKETS = agent_sockets("/var/run/datadog/dsd.socket", "/var/run/datadog/apm.socket")
APART = agent_sockets("/var/run/datadog/dsd.socket", "/var/run/datadog-apm/apm.socket")


def spec(path: str, mounts: list[dict[str, Any]], env: dict[str, str] | None = None,
         more_volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "volumeMounts": mounts}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"containers": [container], "volumes": [{"name": "dd", "hostPath": {"path": path}}, *(more_volumes or [])]}


def mount(path: str, sub_path: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": "dd", "mountPath": path, **({"subPath": sub_path} if sub_path else {}), **extra}


def new_mounts(p: Plan) -> list[tuple[str, str]]:
    return [(m["name"], m["mountPath"]) for change in p.changes for m in change.mounts]


@pytest.mark.parametrize(("host", "mounted", "types", "mounts"), [
    # The socket file: the file type, same mount path.
    ("/var/run/datadog/dsd.socket", mount("/var/run/datadog/dsd.socket"), ["DSDSocket"],
     [("dd", "/var/run/datadog/dsd.socket")]),
    ("/var/run/datadog/apm.socket", mount("/sock/apm"), ["APMSocket"], [("dd", "/sock/apm")]),
    # The directory: one directory volume, same mount path.
    ("/var/run/datadog", mount("/var/run/datadog"), ["DSDSocketDirectory"], [("dd", "/var/run/datadog")]),
    ("/var/run/datadog/", mount("/dd"), ["DSDSocketDirectory"], [("dd", "/dd")]),
    # A directory above, a subPath leading to the directory or the socket: subPath dropped.
    ("/var/run", mount("/var/run/datadog", "datadog"), ["DSDSocketDirectory"], [("dd", "/var/run/datadog")]),
    ("/var/run", mount("/s.sock", "datadog/apm.socket"), ["APMSocket"], [("dd", "/s.sock")]),
    ("/var/run/datadog", mount("/s.sock", "dsd.socket"), ["DSDSocket"], [("dd", "/s.sock")]),
    # A directory above, mounted whole: the directory volume where the socket's directory was.
    ("/var/run", mount("/host/run"), ["DSDSocketDirectory"], [("dd", "/host/run/datadog")]),
    ("/", mount("/host"), ["DSDSocketDirectory"], [("dd", "/host/var/run/datadog")]),
    ("/var", mount("/host/var"), ["DSDSocketDirectory"], [("dd", "/host/var/run/datadog")]),
    ("/run", mount("/host/run"), ["DSDSocketDirectory"], [("dd", "/host/run/datadog")]),
])
def test_what_replaces_a_volume(host, mounted, types, mounts):
    p = plan(spec(host, [mounted]), 0, SOCKETS)
    assert p.blockers == ()
    assert list(p.types) == types
    assert new_mounts(p) == mounts
    assert all("subPath" not in m for change in p.changes for m in change.mounts)


def test_a_parent_mount_keeps_the_socket_the_container_names():
    p = plan(spec("/var/run", [mount("/host/run")], env={"DD_TRACE_AGENT_URL": "unix:///host/run/datadog/apm.socket"}),
             0, SOCKETS)
    assert list(p.types) == ["APMSocketDirectory"]
    assert any("the rest of /var/run is no longer visible" in n for n in p.notes)


def test_sockets_in_two_directories_get_a_volume_each_unless_one_is_named():
    both = plan(spec("/var/run", [mount("/var/run")]), 0, APART)
    assert list(both.csi_volumes) == [("dd", "DSDSocketDirectory"), ("dd-apmsocketdirectory", "APMSocketDirectory")]
    assert new_mounts(both) == [("dd", "/var/run/datadog"), ("dd-apmsocketdirectory", "/var/run/datadog-apm")]
    assert any("names neither socket" in n for n in both.notes)
    dsd_only = plan(spec("/var/run", [mount("/var/run")], env={"DD_DOGSTATSD_URL": "unix:///var/run/datadog/dsd.socket"}),
                    0, APART)
    assert list(dsd_only.types) == ["DSDSocketDirectory"]


def test_mounts_needing_different_types_get_a_volume_each():
    p = plan(spec("/var/run/datadog", [mount("/var/run/datadog"), mount("/tmp/apm.sock", "apm.socket")]), 0, SOCKETS)
    assert list(p.csi_volumes) == [("dd", "DSDSocketDirectory"), ("dd-apmsocket", "APMSocket")]
    assert new_mounts(p) == [("dd", "/var/run/datadog"), ("dd-apmsocket", "/tmp/apm.sock")]


def test_a_new_volume_name_avoids_the_pods_other_volumes():
    taken = [{"name": "dd-apmsocket", "emptyDir": {}}]
    p = plan(spec("/var/run/datadog", [mount("/a"), mount("/b", "apm.socket")], more_volumes=taken), 0, SOCKETS)
    assert p.csi_volumes[1] == ("dd-apmsocket-2", "APMSocket")


def test_other_mount_fields_are_kept():
    p = plan(spec("/var/run/datadog", [mount("/dd", readOnly=True, mountPropagation="HostToContainer")]), 0, SOCKETS)
    assert p.changes[0].mounts == ({"name": "dd", "mountPath": "/dd", "readOnly": True,
                                    "mountPropagation": "HostToContainer"},)


@pytest.mark.parametrize(("mounts", "blocker"), [
    ([mount("/dd"), mount("/lock", "lock")], "holds neither agent socket"),
    ([{"name": "dd", "mountPath": "/dd", "subPathExpr": "$(POD)"}], "subPathExpr"),
    ([mount("/var/run/datadog"), {"name": "x", "mountPath": "/var/run/datadog/", "readOnly": True}],
     "already mounts something at /var/run/datadog"),
])
def test_what_is_not_patched_automatically_says_why(mounts, blocker):
    p = plan(spec("/var/run", mounts) if "lock" in str(mounts) else spec("/var/run/datadog", mounts), 0, SOCKETS)
    assert any(blocker in b for b in p.blockers), p.blockers


def test_ephemeral_containers_are_not_patched():
    pod = spec("/var/run/datadog", [mount("/dd")])
    pod["ephemeralContainers"] = [{"name": "debug", "volumeMounts": [mount("/dd")]}]
    assert any("ephemeral container debug" in b for b in plan(pod, 0, SOCKETS).blockers)


def test_an_unmounted_volume_is_replaced_by_what_its_root_reaches():
    p = plan(spec("/var/run/datadog/apm.socket", []), 0, SOCKETS)
    assert list(p.types) == ["APMSocket"] and p.changes == ()
    assert any("no container mounts this volume" in n for n in p.notes)


def test_a_match_through_var_run_says_so():
    p = plan(spec("/run/datadog", [mount("/var/run/datadog")]), 0, SOCKETS)
    assert any("because /var/run is /run on the node" in n for n in p.notes)


def _template(volumes_spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": volumes_spec}


def _complex_spec() -> dict[str, Any]:
    """Two hostPath volumes, an init container, a mount in two containers, one needing two types."""
    return {
        "initContainers": [{"name": "init", "volumeMounts": [mount("/var/run/datadog")]}],
        "containers": [
            {"name": "a", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/x"}, mount("/var/run/datadog"),
                                           {"name": "apm", "mountPath": "/apm.sock"}]},
            {"name": "b", "volumeMounts": [mount("/tmp/dsd.sock", "dsd.socket")]},
        ],
        "volumes": [{"name": "cfg", "configMap": {"name": "x"}},
                    {"name": "dd", "hostPath": {"path": "/var/run/datadog"}},
                    {"name": "apm", "hostPath": {"path": "/var/run/datadog/apm.socket", "type": "Socket"}}],
    }


@pytest.mark.parametrize(("pointer", "document"), [
    ("/spec/template/spec", lambda t: {"spec": {"template": t}}),
    ("/spec/jobTemplate/spec/template/spec", lambda t: {"spec": {"jobTemplate": {"spec": {"template": t}}}}),
    ("/spec", lambda t: t),
])
def test_the_json_patch_gives_the_template_the_check_judges(pointer, document):
    template = _template(_complex_spec())
    plans = [plan(template["spec"], i, SOCKETS) for i in (1, 2)]
    ops = patches.operations(pointer, plans, DRIVER)
    patched = jsonpatch.apply(document(copy.deepcopy(template)), ops)
    expected = patches.apply(template, plans, DRIVER)
    assert patched == document(expected)
    volumes = expected["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["cfg", "dd", "apm", "dd-dsdsocket"]
    assert not [v for v in volumes if "hostPath" in v]
    assert volumes[3]["csi"] == {"driver": DRIVER, "readOnly": True, "volumeAttributes": {"type": "DSDSocket"}}
    assert expected["spec"]["containers"][1]["volumeMounts"] == [{"name": "dd-dsdsocket", "mountPath": "/tmp/dsd.sock"}]


def test_every_replaced_element_is_tested_first():
    template = _template(_complex_spec())
    ops = patches.operations("/spec", [plan(template["spec"], 1, SOCKETS)], DRIVER)
    tested = {op["path"].rsplit("/", 1)[0] for op in ops if op["op"] == "test"}
    tested |= {op["path"].removesuffix("/hostPath/path") for op in ops if op["op"] == "test"}
    assert all(op["path"] in tested for op in ops if op["op"] == "replace")
    assert [op["op"] for op in ops if op["op"] != "test"][-1] == "add"  # appended after every replacement


def test_a_changed_object_fails_the_patch_as_a_whole():
    template = _template(_complex_spec())
    ops = patches.operations("/spec", [plan(template["spec"], 1, SOCKETS)], DRIVER)
    template["spec"]["volumes"].insert(0, {"name": "new", "emptyDir": {}})
    with pytest.raises(jsonpatch.PatchFailed):
        jsonpatch.apply(template, ops)


def _workload(kind: str, name: str = "web") -> Workload:
    return Workload("apps", kind, name, {}, "")


def test_the_command_patches_the_object_or_a_manifest():
    ops = [{"op": "test", "path": "/spec/x", "value": "it's"}]
    command = patches.command(_workload("Deployment"), ops)
    assert shlex.split(command) == ["kubectl", "patch", "deployment", "web", "-n", "apps", "--type=json", "-p",
                                    json.dumps(ops, separators=(",", ":"))]
    for kind in ("Job", "Pod"):
        words = shlex.split(patches.command(_workload(kind), ops))
        assert words[:5] == ["kubectl", "patch", "--local", "-f", f"{kind.lower()}-web.yaml"]
        assert words[-2:] == ["-o", "yaml"]


def test_the_independent_applier_follows_the_rfc():
    """The applier these tests trust, on the operations the check emits (RFC 6902 section 4)."""
    doc = {"a": [{"n": 1}, {"n": 2}], "b": {"c": "~/"}}
    assert jsonpatch.apply(doc, [{"op": "add", "path": "/a/-", "value": {"n": 3}}])["a"][-1] == {"n": 3}
    assert jsonpatch.apply(doc, [{"op": "add", "path": "/a/0", "value": 0}])["a"][:2] == [0, {"n": 1}]
    assert jsonpatch.apply(doc, [{"op": "replace", "path": "/a/1", "value": "x"}])["a"] == [{"n": 1}, "x"]
    assert jsonpatch.apply(doc, [{"op": "test", "path": "/b/c", "value": "~/"}]) == doc
    for bad in ({"op": "test", "path": "/a/0/n", "value": 2}, {"op": "replace", "path": "/a/2", "value": 1},
                {"op": "replace", "path": "/z", "value": 1}, {"op": "add", "path": "/a/01", "value": 1}):
        with pytest.raises(jsonpatch.PatchFailed):
            jsonpatch.apply(doc, [bad])
    assert doc == {"a": [{"n": 1}, {"n": 2}], "b": {"c": "~/"}}  # never changed in place
