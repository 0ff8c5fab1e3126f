"""A workload's replacement plans as an RFC 6902 JSON patch.

Every changed element is first ``test``-ed (the volume's name and host path,
each mount's volume name), so a patch applied to an object that changed since
the check fails as a whole instead of replacing the wrong entry. Elements are
replaced in place and new ones appended, never removed, so every index in the
patch stays valid while it applies.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from csi_driver.check.replacement import Plan
from csi_driver.check.workloads import IMMUTABLE_TEMPLATES, Workload

Obj = Mapping[str, Any]

KUBECTL_RESOURCES = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemonset",
                     "ReplicaSet": "replicaset", "Job": "job", "CronJob": "cronjob", "Pod": "pod"}


def csi_volume(name: str, volume_type: str, driver: str) -> dict[str, Any]:
    return {"name": name, "csi": {"driver": driver, "readOnly": True, "volumeAttributes": {"type": volume_type}}}


def operations(spec_pointer: str, plans: Sequence[Plan], driver: str) -> list[dict[str, Any]]:
    """The JSON patch for the pod spec at ``spec_pointer`` (e.g. ``/spec/template/spec``)."""
    ops: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for plan in plans:
        at = f"{spec_pointer}/volumes/{plan.volume_index}"
        ops += [{"op": "test", "path": f"{at}/name", "value": plan.volume},
                {"op": "test", "path": f"{at}/hostPath/path", "value": plan.host_path}]
        first, *others = plan.csi_volumes
        ops.append({"op": "replace", "path": at, "value": csi_volume(*first, driver)})
        added += [{"op": "add", "path": f"{spec_pointer}/volumes/-", "value": csi_volume(*other, driver)}
                  for other in others]
        for change in plan.changes:
            mounts = f"{spec_pointer}/{change.ref.field}/{change.ref.container_index}/volumeMounts"
            at = f"{mounts}/{change.ref.mount_index}"
            ops += [{"op": "test", "path": f"{at}/name", "value": plan.volume},
                    {"op": "replace", "path": at, "value": dict(change.mounts[0])}]
            added += [{"op": "add", "path": f"{mounts}/-", "value": dict(m)} for m in change.mounts[1:]]
    return ops + added


def apply(template: Obj, plans: Sequence[Plan], driver: str) -> dict[str, Any]:
    """The pod template as the patch leaves it (for judging it again)."""
    patched = copy.deepcopy(dict(template))
    spec = patched.setdefault("spec", {})
    for plan in plans:
        first, *others = plan.csi_volumes
        spec["volumes"][plan.volume_index] = csi_volume(*first, driver)
        spec["volumes"] += [csi_volume(*other, driver) for other in others]
        for change in plan.changes:
            mounts = spec[change.ref.field][change.ref.container_index]["volumeMounts"]
            mounts[change.ref.mount_index] = dict(change.mounts[0])
            mounts += [dict(m) for m in change.mounts[1:]]
    return patched


def spec_pointer(workload: Workload) -> str | None:
    if workload.template_pointer is None:
        return None
    return f"{workload.template_pointer}/spec"


def command(workload: Workload, ops: list[dict[str, Any]]) -> str:
    """The kubectl command that applies the patch (to a manifest file where the template is immutable)."""
    patch = shlex.quote(json.dumps(ops, separators=(",", ":")))
    resource = KUBECTL_RESOURCES.get(workload.kind, workload.kind.lower())
    if workload.kind in IMMUTABLE_TEMPLATES:
        manifest = shlex.quote(f"{resource}-{workload.name}.yaml")
        return f"kubectl patch --local -f {manifest} --type=json -p {patch} -o yaml"
    return (f"kubectl patch {resource} {shlex.quote(workload.name)} -n {shlex.quote(workload.namespace)} "
            f"--type=json -p {patch}")


def how_to_apply(workload: Workload) -> str:
    if workload.kind == "Pod":
        return ("a Pod's volumes cannot change: save it (kubectl get pod -o yaml), apply the patch to that "
                "file, and create the pod again from it")
    if workload.kind == "Job":
        return ("a Job's pod template cannot change: apply the patch to the Job's manifest and create the Job "
                "again from it")
    return "apply with the command; the workload then rolls out pods with the CSI volume"
