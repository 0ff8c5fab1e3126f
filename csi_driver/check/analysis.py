"""One workload judged: its ``hostPath`` findings, Pod Security verdicts and patch."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from csi_driver.check import patches, podsecurity
from csi_driver.check.paths import AgentSocket, runtime_sockets_reached
from csi_driver.check.podsecurity import LevelVersion, NamespacePolicy, Violation
from csi_driver.check.replacement import Plan, mounts_of, plan, sockets_reached
from csi_driver.check.workloads import Workload

Obj = Mapping[str, Any]

# Image repositories (the last path components) of what must keep its hostPath.
_AGENT_IMAGES = ("datadog/agent", "datadoghq/agent", "datadog/cluster-agent", "datadoghq/cluster-agent")
_DRIVER_IMAGES = ("datadog-csi-driver",)


@dataclass(frozen=True)
class RuntimeFinding:
    volume: str
    host_path: str
    sockets: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """What one namespace level does to pods of a template."""

    mode: str  # enforce | warn
    policy: LevelVersion | None  # None: the namespace's labels could not be read
    violations: tuple[Violation, ...]

    @property
    def objects(self) -> bool:
        return bool(self.violations)


@dataclass(frozen=True)
class Patch:
    operations: list[dict[str, Any]]
    command: str
    how: str
    meets: str  # the strictest level the patched template meets
    remaining: tuple[Violation, ...]  # what the restricted level still forbids once patched


@dataclass(frozen=True)
class WorkloadReport:
    workload: Workload
    agent: tuple[Plan, ...]
    runtime: tuple[RuntimeFinding, ...]
    enforce: Verdict
    warn: Verdict
    meets: str  # the strictest level the template meets
    patch: Patch | None
    patch_blocked: tuple[str, ...]

    @property
    def verdict(self) -> str:
        """rejected | warned | allowed | unknown: what admission does to its pods today."""
        if self.enforce.policy is None:
            return "unknown"
        if self.enforce.objects:
            return "rejected"
        return "warned" if self.warn.objects else "allowed"


def _verdict(mode: str, policy: LevelVersion | None, template: Obj) -> Verdict:
    if policy is None:
        return Verdict(mode, None, ())
    return Verdict(mode, policy, tuple(podsecurity.violations(template, policy.level, policy.version)))


def _exposed(spec: Obj, volume: Obj) -> list[str]:
    """The host paths a volume's mounts expose (hostPath joined with each subPath); its root when
    nothing mounts it or a subPathExpr, known only on the node, may lead anywhere below."""
    root = str(volume["hostPath"].get("path", ""))
    mounts = [ref.mount for ref in mounts_of(spec, volume.get("name", ""))]
    if not mounts or any(m.get("subPathExpr") for m in mounts):
        return [root]
    return [posixpath.join(root, m.get("subPath") or ".") for m in mounts]


def strictest_level(template: Obj) -> tuple[str, tuple[Violation, ...]]:
    """The strictest level a template meets, and what the restricted level forbids in it."""
    restricted = tuple(podsecurity.violations(template, "restricted"))
    if not restricted:
        return "restricted", ()
    return ("baseline" if not podsecurity.violations(template, "baseline") else "privileged"), restricted


def _image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def exemption(workload: Workload, driver_daemonsets: set[tuple[str, str]]) -> str:
    """Why a workload needs its hostPath (the agent, this driver), or ""."""
    if workload.kind == "DaemonSet" and (workload.namespace, workload.name) in driver_daemonsets:
        return "the CSI driver's DaemonSet: it is where the hostPath belongs"
    spec = workload.template.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        repository = _image_repository(str(container.get("image", "")))
        if repository.endswith(_AGENT_IMAGES):
            return f"the Datadog Agent ({repository}): it creates the sockets"
        if repository.endswith(_DRIVER_IMAGES):
            return f"the CSI driver ({repository}): it is where the hostPath belongs"
    return ""


def _patch(workload: Workload, plans: tuple[Plan, ...], driver: str) -> tuple[Patch | None, tuple[str, ...]]:
    blocked = tuple(f'volume "{p.volume}": {reason}' for p in plans for reason in p.blockers)
    pointer = patches.spec_pointer(workload)
    if pointer is None:
        blocked += (f"{workload.kind}/{workload.name} owns these pods and is not a kind this check reads: "
                    "change its pod template by hand as described",)
    if blocked or not plans or pointer is None:
        return None, blocked
    ops = patches.operations(pointer, plans, driver)
    meets, remaining = strictest_level(patches.apply(workload.template, plans, driver))
    return Patch(ops, patches.command(workload, ops), patches.how_to_apply(workload), meets, remaining), ()


def analyse(workload: Workload, policy: NamespacePolicy | None, sockets: tuple[AgentSocket, ...],
            driver: str) -> WorkloadReport | None:
    """The report of a workload with findings, else None."""
    spec = workload.template.get("spec") or {}
    plans: list[Plan] = []
    runtime: list[RuntimeFinding] = []
    for index, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" not in volume:
            continue
        path = str(volume["hostPath"].get("path", ""))
        exposed = _exposed(spec, volume)
        reached = tuple(dict.fromkeys(socket for p in exposed for socket in runtime_sockets_reached(p)))
        if reached:
            runtime.append(RuntimeFinding(volume.get("name", "?"), path, reached))
        if any(sockets_reached(p, sockets) for p in exposed):
            found = plan(spec, index, sockets)
            if reached:
                found = replace(found, notes=(*found.notes, f"{path} also exposes container runtime sockets; the "
                                              "CSI volume does not, so a container that uses them must keep a "
                                              "hostPath and cannot run under baseline"))
            plans.append(found)
    if not plans and not runtime:
        return None
    enforce = _verdict("enforce", policy.enforce if policy else None, workload.template)
    warn = _verdict("warn", policy.warn if policy else None, workload.template)
    patch, blocked = _patch(workload, tuple(plans), driver)
    meets, _ = strictest_level(workload.template)
    return WorkloadReport(workload, tuple(plans), tuple(runtime), enforce, warn, meets, patch, blocked)
