"""The report document as text: JSON, YAML, or tables for an 80-column terminal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from csi_driver.check.table import WIDTH, render, wrap

Doc = dict[str, Any]

LEGEND = ("ADMISSION: what the namespace's Pod Security labels do to new pods of the workload: rejected by "
          "its enforce level, warned by its warn level only, allowed, or unknown (labels unreadable); "
          "--output json lists every violation.")


def as_json(doc: Doc) -> str:
    return json.dumps(doc, indent=2)


def as_yaml(doc: Doc) -> str:
    import yaml  # comes with the kubernetes client

    text: str = yaml.safe_dump(doc, sort_keys=False, width=100)
    return text.rstrip("\n")


def _workload(w: Doc) -> str:
    return f"{w['kind'].lower()}/{w['name']}"


def _paragraph(text: str, indent: str = "  ") -> list[str]:
    return wrap(indent + text, WIDTH, indent + "  ")


def _agent_rows(doc: Doc) -> list[list[str]]:
    return [[w["namespace"], _workload(w), f["hostPath"], w["podSecurity"]["admission"],
             "by hand (notes)" if f["blockers"] else "\n".join(r["type"] for r in f["replaceWith"])]
            for w in doc["workloads"] for f in w["agentSockets"]]


def _socket_names(paths: list[str]) -> str:
    names = list(dict.fromkeys(path.rsplit("/", 1)[-1] for path in paths))
    return "\n".join(names[:2]) + (f"\nand {len(names) - 2} more" if len(names) > 2 else "")


def _runtime_rows(doc: Doc) -> list[list[str]]:
    return [[w["namespace"], _workload(w), f["hostPath"], w["podSecurity"]["admission"], _socket_names(f["sockets"])]
            for w in doc["workloads"] for f in w["runtimeSockets"]]


def _level(level: Doc | None) -> str:
    if level is None:
        return "unknown"
    text = str(level["level"]) + ("" if level["version"] == "latest" else f":{level['version']}")
    notes = {"default": " (no label)", "invalid label": " (invalid label)"}
    return text + notes.get(level["source"], "")


def _findings(doc: Doc) -> Iterator[str]:
    agent, runtime = _agent_rows(doc), _runtime_rows(doc)
    if agent:
        yield "hostPath volumes reaching the agent's sockets"
        yield from render(["NAMESPACE", "WORKLOAD", "HOSTPATH", "ADMISSION", "REPLACE WITH"], agent)
        yield ""
    else:
        yield f"No workload reaches the agent's sockets through hostPath " \
              f"({_count(doc['namespaces']['scanned'], 'namespace')} scanned)."
        yield ""
    if runtime:
        yield "hostPath volumes reaching container runtime sockets (no CSI replacement)"
        yield from render(["NAMESPACE", "WORKLOAD", "HOSTPATH", "ADMISSION", "REACHES"], runtime)
        yield ""
    if doc["namespacePodSecurity"]:
        yield "Pod Security labels of these namespaces"
        yield from render(["NAMESPACE", "ENFORCE", "WARN"], [[n["namespace"], _level(n["enforce"]), _level(n["warn"])]
                                                             for n in doc["namespacePodSecurity"]])
        yield from wrap(LEGEND, WIDTH)
        yield ""


def _notes(doc: Doc) -> Iterator[str]:
    lines = []
    for w in doc["workloads"]:
        notes = [n for f in w["agentSockets"] for n in f["notes"]]
        notes += [f"no patch: {reason}" for reason in w.get("patchBlocked", [])]
        if notes:
            lines += wrap(f"{w['namespace']} {_workload(w)}:", WIDTH, "  ")
            lines += [line for note in notes for line in _paragraph(f"- {note}")]
    if lines:
        yield "Notes"
        yield from lines
        yield ""


def _patches(doc: Doc) -> Iterator[str]:
    patched = [w for w in doc["workloads"] if "patch" in w]
    if not patched:
        return
    yield "Patches (JSON patch, RFC 6902; the check changed nothing in the cluster)"
    for w in patched:
        patch = w["patch"]
        missing = list(dict.fromkeys(v["check"] for v in patch["remaining"]))
        needs = f" (restricted also needs: {', '.join(missing)})" if missing else ""
        yield from wrap(f"# {w['namespace']} {_workload(w)}: meets {w['podSecurity']['meets']} now, "
                        f"{patch['meetsAfter']} once patched{needs}", WIDTH, "#   ")
        if w["kind"] in ("Job", "Pod"):
            yield from wrap(f"# {patch['apply']}", WIDTH, "#   ")
        yield patch["command"]
    yield ""


def _exempt(doc: Doc) -> Iterator[str]:
    if doc["exempt"]:
        yield "Not reported: these need their hostPath"
        for e in doc["exempt"]:
            yield from _paragraph(f"{e['namespace']} {e['kind'].lower()}/{e['name']}: {e['reason']}")
        yield ""


def _installation(doc: Doc) -> Iterator[str]:
    found = doc["installation"]
    if found is None:
        yield "Installation not checked."
        yield ""
        return
    yield f"Installation of {doc['driver']}"
    for item in found["items"]:
        yield from wrap(f"  {'ok' if item['ok'] else 'FAIL':<5} {item['subject']}: {item['detail']}", WIDTH, " " * 8)
    if found["nodesWithoutDriver"]:
        yield "Nodes where pods cannot use the driver"
        yield from render(["NODE", "CSINODE", "DRIVER POD", "WHY"],
                          [[g["node"], "registered" if g["registered"] else "not registered", g["driverPod"],
                            g["reason"] or "-"] for g in found["nodesWithoutDriver"]])
    yield ""


def _errors(doc: Doc) -> Iterator[str]:
    groups: dict[tuple[str, str], list[str]] = {}
    for e in doc["errors"]:
        reason = "forbidden" if e["message"].startswith("forbidden") else e["message"]
        groups.setdefault((e["namespace"] or "cluster scope", reason), []).append(e["resource"])
    if groups:
        yield "Could not read"
        for (scope, reason), kinds in groups.items():
            where = scope if scope == "cluster scope" else f"namespace {scope}"
            yield from _paragraph(f"{where}: {', '.join(kinds)}: {reason}")
        yield ""


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _summary(doc: Doc) -> str:
    s = doc["summary"]
    parts = [f"{_count(s['workloads'], 'workload')} with findings "
             f"({_count(s['agentSocketVolumes'], 'agent socket volume')}, "
             f"{_count(s['runtimeSocketVolumes'], 'container runtime socket volume')})"]
    if s["installationProblems"] is not None:
        parts.append(_count(s["installationProblems"], "installation problem"))
    parts.append(_count(s["readErrors"], "read error"))
    return f"{', '.join(parts)}; exit code {s['exitCode']}."


def as_table(doc: Doc) -> str:
    lines = [*_findings(doc), *_notes(doc), *_patches(doc), *_exempt(doc), *_installation(doc), *_errors(doc)]
    lines += wrap(_summary(doc), WIDTH)
    return "\n".join(lines)
