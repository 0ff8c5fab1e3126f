"""The whole check: read the cluster, judge every workload, check the installation.

Lists are cluster-wide when every namespace is scanned; a cluster-wide list
the user may not make is made again namespace by namespace, and a namespace
that refuses it too is reported while the others are scanned. Only a failure
to reach the API server at all stops the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from csi_driver.check import installation, resources
from csi_driver.check.analysis import WorkloadReport, analyse, exemption
from csi_driver.check.installation import Installation
from csi_driver.check.paths import AgentSocket
from csi_driver.check.podsecurity import NamespacePolicy, namespace_policy
from csi_driver.check.resources import Api, ApiError, Forbidden, Obj, Resource, Unreachable
from csi_driver.check.workloads import Workload, collect


@dataclass(frozen=True)
class Options:
    driver_name: str
    sockets: tuple[AgentSocket, ...]
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    driver_namespace: str = "datadog-csi-driver"
    check_installation: bool = True


@dataclass(frozen=True)
class ReadError:
    namespace: str  # "" at cluster scope
    resource: str
    message: str


@dataclass
class Report:
    options: Options
    scanned: list[str] = field(default_factory=list)  # namespaces scanned (also when partly)
    policies: dict[str, NamespacePolicy | None] = field(default_factory=dict)
    workloads: list[WorkloadReport] = field(default_factory=list)
    exempt: list[tuple[Workload, str]] = field(default_factory=list)
    installation: Installation | None = None
    errors: list[ReadError] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2: something could not be read; 1: findings or installation problems; 0: neither."""
        if self.errors:
            return 2
        problems = self.installation.problems if self.installation else 0
        return 1 if self.workloads or problems else 0


class _Reader:
    """Reads through the Api, turning refusals into ReadErrors; Unreachable passes through."""

    def __init__(self, api: Api, report: Report) -> None:
        self.api = api
        self.report = report

    def failed(self, namespace: str, resource: Resource, err: ApiError) -> None:
        self.report.errors.append(ReadError(namespace, resource.plural, str(err)))

    def list(self, resource: Resource, namespace: str | None = None, selector: str = "") -> list[Obj] | None:
        try:
            return self.api.list(resource, namespace, selector)
        except Unreachable:
            raise
        except ApiError as err:
            self.failed(namespace or "", resource, err)
            return None

    def get(self, resource: Resource, name: str) -> Obj | None:
        try:
            return self.api.get(resource, name)
        except Unreachable:
            raise
        except ApiError as err:
            self.failed("", resource, err)
            return None


def _namespaces(reader: _Reader, selected: tuple[str, ...]) -> dict[str, Obj | None] | None:
    """Namespace name -> labels (None: unreadable); None when they cannot be listed."""
    if not selected:
        listed = reader.list(resources.NAMESPACES)
        if listed is None:
            return None
        return {(ns.get("metadata") or {}).get("name", ""): (ns.get("metadata") or {}).get("labels") or {}
                for ns in listed}
    found: dict[str, Obj | None] = {}
    for name in selected:
        try:
            namespace = reader.api.get(resources.NAMESPACES, name)
        except Forbidden as err:
            reader.failed(name, resources.NAMESPACES, err)  # its Pod Security labels stay unknown
            found[name] = None
            continue
        if namespace is None:
            reader.failed(name, resources.NAMESPACES, ApiError("namespace not found"))
            continue
        found[name] = (namespace.get("metadata") or {}).get("labels") or {}
    return found


def _list_everywhere(reader: _Reader, resource: Resource, namespaces: list[str] | None,
                     cluster_wide: bool) -> list[Obj]:
    if cluster_wide:
        try:
            return reader.api.list(resource)
        except Forbidden as err:
            if namespaces is None:
                reader.failed("", resource, err)
                return []
        except Unreachable:
            raise
        except ApiError as err:
            reader.failed("", resource, err)
            return []
    items: list[Obj] = []
    for namespace in namespaces or []:
        items += reader.list(resource, namespace) or []
    return items


def _check_installation(reader: _Reader, options: Options) -> Installation:
    csidriver = reader.get(resources.CSIDRIVERS, options.driver_name)
    nodes = reader.list(resources.NODES) or []
    csinodes = reader.list(resources.CSINODES) or []
    daemonsets = reader.list(resources.DAEMONSETS, options.driver_namespace) or []
    pods = reader.list(resources.PODS, options.driver_namespace) if installation.find_daemonsets(daemonsets) else []
    return installation.check(options.driver_name, options.driver_namespace, csidriver, nodes, csinodes,
                              daemonsets, pods or [])


def scan(api: Api, options: Options) -> Report:
    report = Report(options)
    reader = _Reader(api, report)
    labels = _namespaces(reader, options.namespaces)
    names = sorted(labels) if labels is not None else None
    objects = {r.kind: _list_everywhere(reader, r, names, not options.namespaces)
               for r in resources.WORKLOAD_RESOURCES}
    if options.check_installation:
        report.installation = _check_installation(reader, options)
    driver_daemonsets = {(options.driver_namespace, (ds.get("metadata") or {}).get("name", ""))
                         for ds in installation.find_daemonsets(
                             o for o in objects["DaemonSet"]
                             if (o.get("metadata") or {}).get("namespace") == options.driver_namespace)}
    found = {(o.get("metadata") or {}).get("namespace", "") for listed in objects.values() for o in listed}
    report.scanned = sorted(set(names or ()) | found)
    for name in report.scanned:
        namespace_labels = (labels or {}).get(name)
        report.policies[name] = namespace_policy(namespace_labels) if namespace_labels is not None else None
    for workload in collect(objects):
        judged = analyse(workload, report.policies.get(workload.namespace), options.sockets, options.driver_name)
        if judged is None:
            continue
        reason = exemption(workload, driver_daemonsets)
        if reason:
            report.exempt.append((workload, reason))
        else:
            report.workloads.append(judged)
    return report
