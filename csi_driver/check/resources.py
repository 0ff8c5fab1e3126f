"""The API resources the check reads, and the read-only interface it reads them through.

Objects are plain JSON (``dict``), as the API server sends them: field names
match the JSON patch paths the check prints, and no generated model refuses an
object the server considers valid (a CSINode whose ``drivers`` is null).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    group_version: str  # v1, apps/v1, ...
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{root}{scope}/{self.plural}" + (f"/{name}" if name else "")


NAMESPACES = Resource("Namespace", "namespaces", "v1", namespaced=False)
NODES = Resource("Node", "nodes", "v1", namespaced=False)
PODS = Resource("Pod", "pods", "v1")
DEPLOYMENTS = Resource("Deployment", "deployments", "apps/v1")
STATEFULSETS = Resource("StatefulSet", "statefulsets", "apps/v1")
DAEMONSETS = Resource("DaemonSet", "daemonsets", "apps/v1")
REPLICASETS = Resource("ReplicaSet", "replicasets", "apps/v1")
JOBS = Resource("Job", "jobs", "batch/v1")
CRONJOBS = Resource("CronJob", "cronjobs", "batch/v1")
CSIDRIVERS = Resource("CSIDriver", "csidrivers", "storage.k8s.io/v1", namespaced=False)
CSINODES = Resource("CSINode", "csinodes", "storage.k8s.io/v1", namespaced=False)
WORKLOAD_RESOURCES = (PODS, DEPLOYMENTS, STATEFULSETS, DAEMONSETS, REPLICASETS, JOBS, CRONJOBS)


class ApiError(Exception):
    """A request the API server refused or failed; the message says which and why."""


class Forbidden(ApiError):
    pass


class Expired(ApiError):
    """A list's continue token outlived the server's compaction (HTTP 410)."""


class Unreachable(ApiError):
    """No answer from the API server at all: nothing else can be read either."""


class Api(Protocol):
    def list(self, resource: Resource, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        """Every object, across pages; ``Forbidden`` or ``ApiError`` when refused."""

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""


def list_pages(fetch: Callable[[str], Mapping[str, Any]]) -> list[Obj]:
    """Items of every page; ``fetch(token)`` returns one list response ("" for the first)."""
    items: list[Obj] = []
    token = ""
    while True:
        page = fetch(token)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items
