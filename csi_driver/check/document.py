"""The report as one JSON-ready document: what ``--output json|yaml`` prints and the table shows."""

from __future__ import annotations

from typing import Any

from csi_driver.check.analysis import Verdict, WorkloadReport
from csi_driver.check.installation import Installation
from csi_driver.check.podsecurity import LevelVersion, Violation
from csi_driver.check.replacement import Plan
from csi_driver.check.scan import Report

Doc = dict[str, Any]


def _violation(v: Violation) -> Doc:
    return {"check": v.check, "level": v.level, "detail": v.detail}


def _level(policy: LevelVersion | None) -> Doc | None:
    if policy is None:
        return None
    return {"level": policy.level, "version": policy.version, "source": policy.source}


def _verdict(verdict: Verdict) -> Doc:
    return {**(_level(verdict.policy) or {"level": "unknown"}),
            "violations": [_violation(v) for v in verdict.violations]}


def _agent_finding(plan: Plan) -> Doc:
    mounts = [{"container": c.ref.container, "mountPath": c.ref.mount.get("mountPath"),
               **({"subPath": c.ref.mount["subPath"]} if c.ref.mount.get("subPath") else {}),
               "becomes": [{"volume": m["name"], "mountPath": m["mountPath"]} for m in c.mounts]}
              for c in plan.changes]
    return {"volume": plan.volume, "hostPath": plan.host_path, "reaches": list(plan.sockets),
            "replaceWith": [{"volume": name, "type": kind} for name, kind in plan.csi_volumes],
            "mounts": mounts, "notes": list(plan.notes), "blockers": list(plan.blockers)}


def _workload(judged: WorkloadReport, with_patch: bool) -> Doc:
    w = judged.workload
    doc: Doc = {
        "namespace": w.namespace, "kind": w.kind, "name": w.name, "pods": w.pods,
        "podSecurity": {"admission": judged.verdict, "meets": judged.meets,
                        "enforce": _verdict(judged.enforce), "warn": _verdict(judged.warn)},
        "agentSockets": [_agent_finding(p) for p in judged.agent],
        "runtimeSockets": [{"volume": r.volume, "hostPath": r.host_path, "sockets": list(r.sockets)}
                           for r in judged.runtime],
    }
    if judged.patch_blocked:
        doc["patchBlocked"] = list(judged.patch_blocked)
    if with_patch and judged.patch is not None:
        patch = judged.patch
        doc["patch"] = {"command": patch.command, "apply": patch.how, "meetsAfter": patch.meets,
                        "remaining": [_violation(v) for v in patch.remaining], "operations": patch.operations}
    return doc


def _installation(found: Installation | None) -> Doc | None:
    if found is None:
        return None
    return {"items": [{"subject": i.subject, "ok": i.ok, "detail": i.detail} for i in found.items],
            "nodesChecked": found.nodes_checked,
            "nodesWithoutDriver": [{"node": g.node, "registered": g.registered, "driverPod": g.driver_pod,
                                    "reason": g.reason} for g in found.gaps]}


def build(report: Report, with_patch: bool) -> Doc:
    options = report.options
    shown = sorted({j.workload.namespace for j in report.workloads})
    return {
        "driver": options.driver_name,
        "agentSockets": {s.name: s.path for s in options.sockets},
        "namespaces": {"selected": list(options.namespaces) or "all", "scanned": len(report.scanned)},
        "summary": {
            "workloads": len(report.workloads),
            "agentSocketVolumes": sum(len(j.agent) for j in report.workloads),
            "runtimeSocketVolumes": sum(len(j.runtime) for j in report.workloads),
            "exempt": len(report.exempt),
            "installationProblems": report.installation.problems if report.installation else None,
            "readErrors": len(report.errors),
            "exitCode": report.exit_code,
        },
        "namespacePodSecurity": [{"namespace": name, "enforce": _level(policy.enforce if policy else None),
                         "warn": _level(policy.warn if policy else None)}
                        for name in shown for policy in [report.policies.get(name)]],
        "workloads": [_workload(j, with_patch) for j in report.workloads],
        "exempt": [{"namespace": w.namespace, "kind": w.kind, "name": w.name, "reason": reason}
                   for w, reason in report.exempt],
        "installation": _installation(report.installation),
        "errors": [{"namespace": e.namespace, "resource": e.resource, "message": e.message} for e in report.errors],
    }
